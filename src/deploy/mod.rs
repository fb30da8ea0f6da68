//! Deployments: the registry, their lifecycle, and the per-deployment analysis loop.

pub mod dropin;
pub mod engine;
pub mod judge_guard;
pub mod migrations;
pub mod model;
pub mod policy;

pub use model::{ArmSpec, DeploymentRecord, DeploymentRequest, State, Strategy};
