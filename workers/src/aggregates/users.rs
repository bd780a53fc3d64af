//! Users as the windows count them: a name with its hash, computed once per
//! event, so the dozen sets an event is counted in (every window size, over
//! every event and per key of each dimension) hash nothing and compare
//! strings only on a hash match.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A user of an event (borrowed from it) and its 64-bit FNV-1a hash: its
/// identity in [`UserSet`] and in [`Hashes`] (a collision, about one in
/// 2^64 per pair, would leave a user out of one count where only hashes
/// are kept).
#[derive(Debug, Clone, Copy)]
pub struct User<'a> {
    pub hash: u64,
    pub name: &'a str,
}

impl<'a> User<'a> {
    pub fn new(name: &'a str) -> User<'a> {
        User {
            hash: fnv1a(name.as_bytes()),
            name,
        }
    }
}

impl PartialEq for User<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.name == other.name
    }
}

impl Eq for User<'_> {}

impl Hash for User<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Distinct users of a batch's window or key.
pub type UserSet<'a> = HashSet<User<'a>, BuildHasherDefault<Prehashed>>;

/// Users as hashes only (what a replica remembers beyond a batch).
pub type Hashes = HashSet<u64, BuildHasherDefault<Prehashed>>;

/// A hasher for values that are hashes already.
#[derive(Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a(bytes);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_counted_once_and_by_name() {
        let a = String::from("user-1");
        let mut set = UserSet::default();
        assert!(set.insert(User::new(&a)));
        assert!(!set.insert(User::new("user-1")), "same name, other string");
        assert!(set.insert(User::new("user-2")));
        // Equal hashes alone do not make two users one.
        assert_ne!(User { hash: 1, name: "x" }, User { hash: 1, name: "y" });
        assert_eq!(set.len(), 2);
    }
}
