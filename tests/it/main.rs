//! The integration tests, as one binary: each module is one area, all share `common`. One
//! binary links the dependency tree once instead of once per file.

// Whole-program tests read as one scenario each, top to bottom.
#![allow(clippy::too_many_lines)]
// Whole-program tests bound their waits in real time (the exporter under test runs on its own
// clock); clippy.toml's ban on reading the system time is for the crate's code.
#![allow(clippy::disallowed_methods)]

mod common;

mod browser;
mod cli;
mod crash;
mod decode_examples;
mod deploy;
mod discovery;
mod docs;
mod e2e;
mod exporter;
mod fuzz_corpora;
mod hostile;
mod instance_role;
mod openmetrics;
mod pod_identity;
mod products;
mod signing;
mod sim_client;
mod skew;
mod store_properties;
mod task_events;
mod tasks_api;
mod web;
