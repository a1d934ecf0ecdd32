//! The admin listener's `/ui` page: static HTML and script, no build step, no CDN; it polls
//! `/ui/data`, which reads what the gateway records (`crate::gateway::operator_view`).

pub(crate) const PAGE: &str = include_str!("operator.html");
