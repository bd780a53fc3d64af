//! Users as the windows count them: a name with its hash, computed once per
//! event, so making the users of the dozen counts an event is in (every
//! window size, over every event and per key of each dimension) distinct
//! sorts by a number and compares strings only on a hash match.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// A user of an event (borrowed from it) and its 64-bit FNV-1a hash: its
/// identity in [`Hashes`] (a collision, about one in
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
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_equal_by_name_and_hashed_once() {
        let a = String::from("user-1");
        assert_eq!(
            User::new(&a),
            User::new("user-1"),
            "same name, other string"
        );
        assert_ne!(User::new("user-1"), User::new("user-2"));
        // Equal hashes alone do not make two users one.
        assert_ne!(User { hash: 1, name: "x" }, User { hash: 1, name: "y" });
        let mut known = Hashes::default();
        assert!(known.insert(User::new("user-1").hash));
        assert!(!known.insert(User::new(&a).hash));
    }
}
