//! A runtime on fake transports and a manual clock, with no threads: tests drive it by
//! hand, step by step, and nothing sleeps or touches a socket.

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::channels::Next;
use crate::engine::dispatch::{self, Driven};
use crate::engine::runtime::{Core, Wiring};
use crate::foundation::clock::ManualClock;
use crate::foundation::config::Config;
use crate::upstream::fake_transport::FakeTransport;
use crate::upstream::transport::Transport;

pub(crate) struct Rig {
    pub core: Arc<Core>,
    pub clock: Arc<ManualClock>,
    /// Each provider's fake, by name.
    pub fakes: HashMap<String, Arc<FakeTransport>>,
    pub wiring: Wiring,
}

impl Rig {
    /// A runtime for `toml`; every provider gets a fake transport.
    pub fn new(toml: &str) -> Rig {
        let resolved = Config::from_toml_str(toml).unwrap().resolve().unwrap();
        let clock = ManualClock::shared();
        let mut fakes = HashMap::new();
        for p in resolved.services.iter().flat_map(|s| &s.providers) {
            fakes.insert(p.name.clone(), FakeTransport::new(clock.clone()));
        }
        let made = fakes.clone();
        let connect = move |p: &crate::foundation::config::ResolvedProvider, _| {
            made[&p.name].clone() as Arc<dyn Transport>
        };
        let (core, wiring) = Core::new(&resolved, clock.clone(), &connect);
        Rig {
            core: Arc::new(core),
            clock,
            fakes,
            wiring,
        }
    }

    pub fn fake(&self, provider: &str) -> &FakeTransport {
        &self.fakes[provider]
    }

    /// What one worker would do next: take the most urgent job and drive it.
    pub fn work_once(&self) -> Option<Driven> {
        let next = self.core.channels.receivers().try_next()?;
        let (Next::Ready(job) | Next::Queued(job)) = next else {
            return None;
        };
        Some(dispatch::drive(&self.core, job))
    }

    /// Works until nothing is queued; at most `limit` jobs.
    pub fn work_all(&self, limit: usize) -> usize {
        let mut done = 0;
        while done < limit {
            let Some(driven) = self.work_once() else {
                break;
            };
            done += 1;
            if let Some(next) = driven.next {
                self.core.channels.send_ready(next);
            }
        }
        done
    }

    /// A one-service configuration: providers `a`, `b`... with `extra` in `[defaults]`.
    pub fn config(providers: &[&str], defaults: &str) -> String {
        let mut text = format!("[defaults]\n{defaults}\n");
        for (i, name) in providers.iter().enumerate() {
            text.push_str(&format!(
                "[[services.s.providers]]\nname = \"{name}\"\nbase_url = \"http://10.0.0.{}:80\"\n",
                i + 1
            ));
        }
        text
    }
}
