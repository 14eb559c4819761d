//! The hasher of maps keyed by configured names (services, endpoints), looked up on
//! every request.
//!
//! Their keys come from the configuration and never from a caller, so a caller cannot
//! flood one with colliding keys; a lookup is then the only cost that matters, and
//! SipHash costs a few hundred instructions on every request for each of them.
//! (A hasher, not map aliases: the header generator reads every type alias.)

/// Builds the hasher of a `HashMap<String, _, ByName>` or `HashSet<String, ByName>`.
pub(crate) type ByName = rustc_hash::FxBuildHasher;
