//! Latchkey: a self-hosted product-integrations gateway, wire-compatible with Nango's public API.
//!
//! One folder per concept: [`config`] (loading, validation, hot reload), [`catalog`] (the
//! provider model), [`store`] (database, migrations, encryption), [`api`] (the control plane),
//! [`proxy`] (the Pingora edge). [`integration`] and [`connection`] are the two records
//! everything else is about.

pub mod api;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod connection;
pub mod integration;
pub mod problem;
pub mod proxy;
pub mod schema;
pub mod secret;
pub mod server;
pub mod store;
pub mod time;
pub mod webhooks;
