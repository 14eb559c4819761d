//! Admission: checking a request, then running it on the caller's thread or queueing it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::dispatch;
use crate::engine::runtime::Core;
use crate::flow::job::{Job, SharedJob};
use crate::flow::ticket::{CallbackCell, JobPhase, Outcome, Sink, Ticket};
use crate::foundation::error::Error;
use crate::foundation::index_set::IndexSet;
use crate::foundation::request::Request;
use crate::foundation::response::Response;
use crate::telemetry::spans::RequestSpan;

impl Core {
    /// Runs a request to its outcome; inline when a slot is free and nothing as urgent
    /// waits, else queued like [`Core::queue_request`] with the caller waiting on its
    /// ticket. A hedged request is always queued: the caller's thread must be free to
    /// take whichever answer comes first.
    pub fn drive_call(&self, request: Request) -> Outcome {
        // One reading of the clock for the admission, the deadline and the first pick.
        let now = self.clock.now();
        let (service, eligible) = self.admit(&request, now)?;
        let svc = &self.services[service];
        if svc.admission.has_waiting_at_or_above(request.priority)
            || svc.hedge_after(&request).is_some()
        {
            return self
                .enqueue(service, eligible, request, false, now)?
                .0
                .wait();
        }
        let deadline = request.deadline(now, svc.deadline);
        let active = self.activity.enter();
        let trace = RequestSpan::new(&svc.name, &request.endpoint, request.method.as_str());
        let mut job = Job::new(
            request,
            service,
            eligible,
            (now, deadline),
            Sink::Caller,
            active,
        );
        job.trace = trace;
        svc.stats.record_admitted();
        let driven = dispatch::drive_from(self, job, now);
        if let Some(next) = driven.next {
            self.channels.send_ready(*next);
        }
        if let Some(ticket) = driven.parked {
            self.recheck_stopping();
            return ticket.wait();
        }
        driven
            .outcome
            .unwrap_or_else(|| Err(Error::Internal("a call ended without an outcome".into())))
    }

    /// Queues a request for the workers; its outcome arrives at the ticket. The ticket's
    /// `wait` runs the job itself if no worker has taken it by then and nothing more
    /// urgent waits: a caller that submits and waits at once then pays no hand-off
    /// either way. The waiter is a thread of its own, not a worker others queue for,
    /// and connection slots still go to parked jobs in priority order. A hedged request
    /// is left to the workers: its waiter must be free to take whichever answer comes
    /// first.
    pub fn queue_request(self: &Arc<Self>, request: Request) -> Result<Ticket, Error> {
        let now = self.clock.now();
        let (service, eligible) = self.admit(&request, now)?;
        let priority = request.priority;
        let may_run_here = self.services[service].hedge_after(&request).is_none();
        let (mut ticket, shared) = self.enqueue(service, eligible, request, may_run_here, now)?;
        let Some(shared) = shared else {
            return Ok(ticket);
        };
        // Weak: a ticket kept after the balancer is gone must not keep it alive (its job
        // was ended by the shutdown's drain then).
        let core = Arc::downgrade(self);
        ticket.run_here_first(Box::new(move || {
            let Some(core) = core.upgrade() else {
                return;
            };
            // Workers take more urgent work first; so does a waiter.
            if core.services[service].admission.has_waiting_above(priority) {
                return;
            }
            let job = shared.lock().take();
            if let Some(job) = job {
                core.run_here(job);
            }
        }));
        Ok(ticket)
    }

    /// Drives a submitted job on its waiter's thread, as a worker would.
    fn run_here(&self, job: Job) {
        // As on a worker: a bug in one job ends it (its waiter learns by the dropped
        // sink) and nothing else.
        let driven = catch_unwind(AssertUnwindSafe(|| dispatch::drive(self, job)));
        if let Ok(Some(next)) = driven.map(|d| d.next) {
            self.channels.send_ready(*next);
        }
    }

    /// Queues a request whose outcome goes to `callback`, exactly once.
    pub fn queue_with_callback<F>(&self, request: Request, callback: F) -> Result<(), Error>
    where
        F: FnOnce(Result<Response, Error>) + Send + 'static,
    {
        let now = self.clock.now();
        let (service, eligible) = self.admit(&request, now)?;
        let phase = Arc::new(JobPhase::default());
        let cell: CallbackCell = Arc::new(parking_lot::Mutex::new(Some(Box::new(callback))));
        let deadline = request.deadline(now, self.services[service].deadline);
        let sink = Sink::Callback(phase.clone(), cell.clone());
        self.enqueue_sink(service, eligible, request, (now, deadline), sink, false)?;
        // No waiter watches the deadline of a callback request: the timer does.
        self.timer.expire(phase, cell, now, deadline);
        Ok(())
    }

    /// Queues a request admitted at clock time `now` with a ticket for its outcome;
    /// `shared`, the job is also its waiter's to take (see [`Core::queue_request`]).
    fn enqueue(
        &self,
        service: usize,
        eligible: IndexSet,
        request: Request,
        shared: bool,
        now: Duration,
    ) -> Result<(Ticket, Option<SharedJob>), Error> {
        let deadline = request.deadline(now, self.services[service].deadline);
        let (ticket, sink) = Ticket::new(self.clock.clone(), now, deadline);
        let shared =
            self.enqueue_sink(service, eligible, request, (now, deadline), sink, shared)?;
        Ok((ticket, shared))
    }

    fn enqueue_sink(
        &self,
        service: usize,
        eligible: IndexSet,
        request: Request,
        times: (Duration, Duration),
        sink: Sink,
        shared: bool,
    ) -> Result<Option<SharedJob>, Error> {
        let svc = &self.services[service];
        let Some(place) = svc.admission.admit(request.priority) else {
            svc.stats.record_rejected();
            return Err(Error::QueueFull {
                service: svc.name.clone(),
                max_size: svc.admission.max_size,
            });
        };
        let trace = RequestSpan::new(&svc.name, &request.endpoint, request.method.as_str());
        let mut job = Job::new(
            request,
            service,
            eligible,
            times,
            sink,
            self.activity.enter(),
        );
        job.trace = trace;
        job.place = Some(place);
        svc.stats.record_admitted();
        job.start_waiting(job.submitted);
        let shared = if shared {
            Some(self.channels.send_shared(job))
        } else {
            self.channels.send(job);
            None
        };
        self.recheck_stopping();
        Ok(shared)
    }

    /// The decision for a request as it would be made now, with nothing sent, taken or
    /// counted; the request is checked as `call` would check it.
    pub fn explain(
        &self,
        request: &Request,
    ) -> Result<crate::telemetry::explain::Explanation, Error> {
        let (index, eligible) = self.resolve(request)?;
        Ok(self.services[index].explain(request, &eligible))
    }

    /// A request's service and eligible providers, checked.
    fn resolve(&self, request: &Request) -> Result<(usize, IndexSet), Error> {
        request.validate()?;
        let index = self
            .service_index(&request.service)
            .ok_or_else(|| Error::UnknownService(request.service.to_string()))?;
        let eligible = self.services[index].eligible_for(request)?;
        Ok((index, eligible))
    }

    /// Checks a request against the configuration, at clock time `now`: its service and
    /// eligible providers.
    fn admit(&self, request: &Request, now: Duration) -> Result<(usize, IndexSet), Error> {
        if self.is_closed() {
            return Err(Error::ShuttingDown);
        }
        let (index, eligible) = self.resolve(request)?;
        self.services[index].budget.deposit(now);
        Ok((index, eligible))
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::test_rig::Rig;
    use crate::foundation::error::Error;
    use crate::foundation::request::Request;
    use std::time::Duration;

    #[test]
    fn an_inline_call_runs_here_and_reaches_the_provider_once() {
        let rig = Rig::new(&Rig::config(&["a"], ""));
        let r = rig
            .core
            .drive_call(Request::get("s", "/x").param("q", "1"))
            .unwrap();
        assert_eq!((r.status(), r.provider(), r.attempts()), (200, "a", 1));
        assert_eq!(rig.fake("a").sent(), ["http://10.0.0.1:80/x?q=1"]);
        assert_eq!(rig.core.requests_under_way(), 0);
    }

    #[test]
    fn admission_stops_at_max_size_and_charges_no_provider() {
        let rig = Rig::new(&Rig::config(&["a"], "queue = { max_size = 2 }"));
        let _t1 = rig.core.queue_request(Request::get("s", "/1")).unwrap();
        let _t2 = rig.core.queue_request(Request::get("s", "/2")).unwrap();
        let third = rig.core.queue_request(Request::get("s", "/3"));
        assert!(
            matches!(third, Err(Error::QueueFull { max_size: 2, .. })),
            "{third:?}"
        );
        assert!(rig.fake("a").sent().is_empty());
        let s = &rig.core.snapshot().services["s"];
        assert_eq!((s.requests, s.rejected, s.queue_depth), (2, 1, 2));
    }

    #[test]
    fn refused_input_reaches_no_provider() {
        let rig = Rig::new(&Rig::config(&["a"], ""));
        let bad = [
            Request::get("nope", "/x"),
            Request::get("s", "quote"),
            Request::get("s", "/x").timeout(Duration::MAX),
            Request::get("s", "/x y"),
            Request::get("s", "/x").header("X-A", "a\nb"),
        ];
        for request in bad {
            let shown = format!("{request:?}");
            assert!(rig.core.drive_call(request.clone()).is_err(), "{shown}");
            assert!(rig.core.queue_request(request).is_err(), "{shown}");
        }
        assert!(rig.fake("a").sent().is_empty());
        assert_eq!(rig.core.snapshot().services["s"].requests, 0);
    }
}
