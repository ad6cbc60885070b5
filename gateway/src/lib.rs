//! Latchkey: a self-hosted product-integrations gateway, wire-compatible with Nango's public API.
//!
//! One folder per concept: [`config`] (loading, validation, hot reload), [`catalog`] (the
//! provider model), [`store`] (database, migrations, encryption), [`api`] (the control plane),
//! [`proxy`] (the Pingora edge), [`auth`] (flows and refresh), [`webhooks`], [`logs`],
//! [`functions`], [`records`] and [`scheduler`]. [`integration`] and [`connection`] are the two records
//! everything else is about.

pub mod api;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod connection;
pub mod functions;
pub mod http;
pub mod integration;
pub mod logs;
pub mod problem;
pub mod proxy;
pub mod records;
pub mod scheduler;
pub mod schema;
pub mod secret;
pub mod server;
pub mod store;
pub mod time;
pub mod webhooks;
