//! The actix runtime of the inventory actors: one OS thread runs an actix
//! `System` with a fixed set of arbiters (each its own thread and event
//! loop). axum stays on the main multi-threaded tokio runtime; the two talk
//! through actor addresses, which are `Send`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::mpsc;
use std::thread;

use actix::{Arbiter, ArbiterHandle, System};
use anyhow::Context;

use crate::domain::SaleId;

pub struct ActorSystem {
    system: System,
    arbiters: Vec<ArbiterHandle>,
}

impl ActorSystem {
    pub fn start(arbiters: usize) -> anyhow::Result<Self> {
        let (ready, started) = mpsc::channel();
        thread::Builder::new()
            .name("flashsale-actors".into())
            .spawn(move || {
                let runner = System::new();
                let handles: Vec<ArbiterHandle> = (0..arbiters.max(1))
                    .map(|_| Arbiter::new().handle())
                    .collect();
                // The receiver only goes away if start() already failed.
                let _ = ready.send((System::current(), handles));
                if let Err(err) = runner.run() {
                    tracing::error!(error = %err, "the actor system stopped with an error");
                }
            })
            .context("failed to start the actor thread")?;
        let (system, arbiters) = started
            .recv()
            .context("the actor thread died while starting")?;
        Ok(Self { system, arbiters })
    }

    /// The arbiter that hosts a sale's actor: a stable hash of its id.
    pub fn arbiter_for(&self, sale: &SaleId) -> &ArbiterHandle {
        let mut hasher = DefaultHasher::new();
        sale.hash(&mut hasher);
        let index = (hasher.finish() % self.arbiters.len() as u64) as usize;
        &self.arbiters[index]
    }

    pub fn stop(&self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        self.system.stop();
    }
}
