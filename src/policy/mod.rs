//! Facts + tenant lookups + settings → decision. Pure.
