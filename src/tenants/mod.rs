//! The tenant→region cache and its loader.
