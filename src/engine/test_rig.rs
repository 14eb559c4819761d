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
    /// What the timer holds, for [`Rig::fire_timers`] (there is no timer thread).
    timers: parking_lot::Mutex<Vec<crate::engine::schedule::Delayed>>,
}

impl Rig {
    /// A runtime for `toml`; every provider gets a fake transport.
    pub fn new(toml: &str) -> Rig {
        Rig::starting_at(toml, std::time::Duration::ZERO)
    }

    /// The same on a clock that starts at Unix time `unix` (a manual clock reads as
    /// Unix time), for calendar quotas.
    pub fn starting_at(toml: &str, unix: std::time::Duration) -> Rig {
        let resolved = Config::from_toml_str(toml).unwrap().resolve().unwrap();
        let clock = ManualClock::shared();
        clock.advance(unix);
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
            timers: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// What the timer thread would do now: requeues every job due by the clock and sends
    /// the hedges due (unless moot). Returns how many of either it fired.
    pub fn fire_timers(&self) -> usize {
        let mut timers = self.timers.lock();
        timers.extend(self.wiring.timer.try_iter());
        let now = crate::foundation::clock::Clock::now(&*self.clock);
        let (due, later): (Vec<_>, Vec<_>) = timers.drain(..).partition(|d| d.due <= now);
        *timers = later;
        let mut fired = 0;
        for d in due {
            match d.what {
                crate::engine::schedule::Due::Requeue(job) => self.core.requeue(*job),
                crate::engine::schedule::Due::Hedge(order) => {
                    crate::engine::hedge::launch(&self.core, *order)
                }
                crate::engine::schedule::Due::CloseBatch {
                    service,
                    endpoint,
                    key,
                    id,
                } => crate::engine::batch::close_and_send(&self.core, service, &endpoint, key, id),
                crate::engine::schedule::Due::Expire { .. } => continue,
            }
            fired += 1;
        }
        fired
    }

    /// The earliest time a job waits for in the timer.
    pub fn next_timer(&self) -> Option<std::time::Duration> {
        let mut timers = self.timers.lock();
        timers.extend(self.wiring.timer.try_iter());
        timers
            .iter()
            .filter(|d| matches!(d.what, crate::engine::schedule::Due::Requeue(_)))
            .map(|d| d.due)
            .min()
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
                self.core.channels.send_ready(*next);
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
