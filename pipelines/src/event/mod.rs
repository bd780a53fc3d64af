//! Canonical events and the decoders that produce them from every producer dialect.

mod decode;
mod model;

pub use decode::{decode, is_known_type, DecodeContext, DecodeError, KNOWN_TYPES};
pub use model::*;
