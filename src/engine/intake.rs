//! Admission: checking a request, then running it on the caller's thread or queueing it.

use std::sync::Arc;
use std::time::Instant;

use crate::engine::dispatch;
use crate::engine::runtime::Core;
use crate::flow::job::Job;
use crate::flow::ticket::{CallbackCell, JobPhase, Outcome, Sink, Ticket};
use crate::foundation::error::Error;
use crate::foundation::index_set::IndexSet;
use crate::foundation::request::Request;
use crate::foundation::response::Response;

impl Core {
    /// Runs a request to its outcome; inline when a slot is free and nothing as urgent
    /// waits, else queued like [`Core::submit`] with the caller waiting on its ticket.
    pub fn call(&self, request: Request) -> Outcome {
        let (service, eligible) = self.admit(&request)?;
        let svc = &self.services[service];
        if svc.admission.has_waiting_at_or_above(request.priority) {
            return self.enqueue(service, eligible, request)?.wait();
        }
        let now = Instant::now();
        let deadline = request.deadline(now, svc.deadline);
        let active = self.activity.enter();
        let job = Job::new(
            request,
            service,
            eligible,
            (now, deadline),
            Sink::Caller,
            active,
        );
        svc.stats.record_admitted();
        let driven = dispatch::drive(self, job);
        if let Some(next) = driven.next {
            self.channels.send_ready(next);
        }
        if let Some(ticket) = driven.parked {
            self.recheck_stopping();
            return ticket.wait();
        }
        driven
            .outcome
            .unwrap_or_else(|| Err(Error::Internal("a call ended without an outcome".into())))
    }

    /// Queues a request for the workers; its outcome arrives at the ticket.
    pub fn submit(&self, request: Request) -> Result<Ticket, Error> {
        let (service, eligible) = self.admit(&request)?;
        self.enqueue(service, eligible, request)
    }

    /// Queues a request whose outcome goes to `callback`, exactly once.
    pub fn submit_with<F>(&self, request: Request, callback: F) -> Result<(), Error>
    where
        F: FnOnce(Result<Response, Error>) + Send + 'static,
    {
        let (service, eligible) = self.admit(&request)?;
        let phase = Arc::new(JobPhase::default());
        let cell: CallbackCell = Arc::new(parking_lot::Mutex::new(Some(Box::new(callback))));
        let now = Instant::now();
        let deadline = request.deadline(now, self.services[service].deadline);
        let sink = Sink::Callback(phase.clone(), cell.clone());
        self.enqueue_sink(service, eligible, request, (now, deadline), sink)?;
        // No waiter watches the deadline of a callback request: the timer does.
        self.timer.expire(phase, cell, now, deadline);
        Ok(())
    }

    fn enqueue(
        &self,
        service: usize,
        eligible: IndexSet,
        request: Request,
    ) -> Result<Ticket, Error> {
        let now = Instant::now();
        let deadline = request.deadline(now, self.services[service].deadline);
        let (ticket, sink) = Ticket::new(now, deadline);
        self.enqueue_sink(service, eligible, request, (now, deadline), sink)?;
        Ok(ticket)
    }

    fn enqueue_sink(
        &self,
        service: usize,
        eligible: IndexSet,
        request: Request,
        times: (Instant, Instant),
        sink: Sink,
    ) -> Result<(), Error> {
        let svc = &self.services[service];
        let Some(place) = svc.admission.admit(request.priority) else {
            svc.stats.record_rejected();
            return Err(Error::QueueFull {
                service: svc.name.clone(),
                max_size: svc.admission.max_size,
            });
        };
        let mut job = Job::new(
            request,
            service,
            eligible,
            times,
            sink,
            self.activity.enter(),
        );
        job.place = Some(place);
        svc.stats.record_admitted();
        job.start_waiting(job.submitted);
        self.channels.send(job);
        self.recheck_stopping();
        Ok(())
    }

    /// Checks a request against the configuration: its service and eligible providers.
    fn admit(&self, request: &Request) -> Result<(usize, IndexSet), Error> {
        if self.is_closed() {
            return Err(Error::ShuttingDown);
        }
        request.validate()?;
        let index = self
            .service_index(&request.service)
            .ok_or_else(|| Error::UnknownService(request.service.clone()))?;
        let service = &self.services[index];
        let eligible = service.eligible_for(request)?;
        service.budget.deposit();
        Ok((index, eligible))
    }
}
