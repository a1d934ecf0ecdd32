//! The control plane: the admin listener's API and operator page, configuration reload, and
//! ACME certificate issuance.

pub(crate) mod acme;
pub(crate) mod admin;
pub(crate) mod operator;
pub(crate) mod reload;
