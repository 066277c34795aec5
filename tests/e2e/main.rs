//! End-to-end tests: the real binary, a real SQLite file, real child processes, the real
//! HTTP API on a loopback port. One file per feature; the harness is in `helpers.rs`.

mod admin;
mod auth;
mod bad_input;
mod batch;
mod cancel;
mod claim_ahead;
mod cli;
mod cluster;
mod crash;
mod dashboard;
mod dead_letter;
mod diagnosis;
mod embedded;
mod events;
mod examples;
mod hardening;
mod helpers;
mod http;
mod limits;
mod never_twice;
mod notifications;
mod orgs;
mod pipeline;
mod retries;
mod schedules;
mod timing;
