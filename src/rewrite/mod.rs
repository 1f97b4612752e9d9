//! Injecting region predicates into statements.
