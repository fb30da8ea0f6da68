//! Deployments: the registry, their lifecycle, and the per-deployment analysis loop.

pub mod dropin;
pub mod engine;
pub mod model;

pub use model::{ArmSpec, DeploymentRecord, DeploymentRequest, State, Strategy};
