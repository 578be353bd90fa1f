//! One module per resource, each with `router()` and handlers named `<resource>_<verb>`.

pub(crate) mod backup;
pub(crate) mod deciders;
pub(crate) mod entities;
pub(crate) mod events;
pub(crate) mod modules;
pub(crate) mod ops;
pub(crate) mod projection_state;
pub(crate) mod projections;
pub(crate) mod reactors;
pub(crate) mod streams;
pub(crate) mod subscribe;
pub(crate) mod wait;
