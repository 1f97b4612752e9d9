//! SQL text + schema → facts (tables, region confinement, tenant keys). Pure.
