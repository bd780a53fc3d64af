//! Canonical events and the decoders that produce them from every producer dialect.

mod decode;
#[cfg(any(test, feature = "testkit"))]
pub mod fixtures;
pub mod local_time;
mod model;

pub use decode::{decode, is_known_type, DecodeContext, DecodeError, KNOWN_TYPES};
pub use local_time::LocalTime;
pub use model::*;
