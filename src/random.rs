//! Unpredictable numbers without another dependency: the standard library seeds each
//! `RandomState` from the OS, so hashing nothing with a fresh one yields 64 random bits. Used for
//! nonce secrets, SSRCs, initial sequence numbers and timestamps (RFC 3550 §5.1 asks for random
//! ones), and tags.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

pub fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}
