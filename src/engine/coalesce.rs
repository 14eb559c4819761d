//! Identical calls in flight at once share one upstream call. The first job to send a
//! call registers it; a job that would make the same call while it is in flight waits
//! beside it instead of taking a seat, rate, quota and cost of its own. When the call
//! ends, each waiting job gets its own copy of the answer, or, when it failed, goes on
//! by itself (another provider, or its own timeout) as if it had made that attempt.

use parking_lot::Mutex;

use crate::flow::job::Job;
use crate::flow::ticket::Ticket;
use crate::foundation::request::ByCallKey;

struct Group {
    /// Jobs waiting for its answer.
    followers: Vec<Job>,
}

/// Shards of the map: every GET takes a shard's lock twice, and one lock for all of a
/// service's traffic was a convoy at 8 threads (p99 x1.5, p999 x6 end to end).
const SHARDS: usize = 64;

type Groups = ByCallKey<Group>;

/// A service's calls in flight that others may share, by their
/// [`call_key`](crate::foundation::request::Request::call_key).
pub(crate) struct Coalescer {
    shards: Box<[Mutex<Groups>]>,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            shards: (0..SHARDS).map(|_| Mutex::new(Groups::default())).collect(),
        }
    }
}

impl Coalescer {
    fn shard(&self, key: u128) -> &Mutex<Groups> {
        // The high half: the map inside uses the low one.
        &self.shards[(key >> 64) as usize % SHARDS]
    }

    /// Puts the job beside the identical call in flight, if there is one; `park` runs
    /// first, under the lock (it only swaps the job's sink for a ticket's). The job
    /// comes back when there is nothing to share.
    // Callers ask `in_flight` first; a job still comes back when the call ended in
    // between, moved rather than boxed, so that rare miss allocates nothing either.
    #[allow(clippy::result_large_err)]
    pub fn join(
        &self,
        key: u128,
        mut job: Job,
        park: impl FnOnce(&mut Job) -> Option<Ticket>,
    ) -> Result<Option<Ticket>, Job> {
        let mut groups = self.shard(key).lock();
        match groups.get_mut(&key) {
            Some(group) => {
                let ticket = park(&mut job);
                group.followers.push(job);
                Ok(ticket)
            }
            _ => Err(job),
        }
    }

    /// Whether an identical call is in flight now. Asked before [`Coalescer::join`], so
    /// that a miss, the common case, does not move the job in and out.
    pub fn in_flight(&self, key: u128) -> bool {
        self.shard(key).lock().contains_key(&key)
    }

    /// Registers a call about to be sent; false when an identical one already is (this
    /// one then gives its seat back and joins it).
    pub fn lead(&self, key: u128) -> bool {
        let mut groups = self.shard(key).lock();
        if groups.contains_key(&key) {
            return false;
        }
        groups.insert(
            key,
            Group {
                followers: Vec::new(),
            },
        );
        true
    }

    /// The call ended: the jobs that waited for it.
    pub fn finish(&self, key: u128) -> Vec<Job> {
        self.shard(key)
            .lock()
            .remove(&key)
            .map(|g| g.followers)
            .unwrap_or_default()
    }

    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().values().map(|g| g.followers.len()).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::engine::test_rig::Rig;
    use crate::foundation::error::Error;
    use crate::foundation::request::{Method, Request};
    use crate::upstream::fake_transport::Reply;

    /// Holds `a`'s next call on the wire (answering `status` when released); returns
    /// the channels that say it arrived and let it go.
    fn hold(
        rig: &Rig,
        status: u16,
    ) -> (
        crossbeam_channel::Receiver<()>,
        crossbeam_channel::Sender<()>,
    ) {
        let (arrived_tx, arrived) = crossbeam_channel::bounded(1);
        let (release, release_rx) = crossbeam_channel::bounded(1);
        rig.fake("a").push(Reply::HeldThen {
            arrived: arrived_tx,
            release: release_rx,
            status,
        });
        (arrived, release)
    }

    #[test]
    fn identical_requests_in_flight_share_one_call_and_each_gets_its_answer() {
        let rig = Rig::new(&Rig::config(&["a"], "pool = { max_connections = 50 }"));
        let (arrived, release) = hold(&rig, 200);
        let same = || Request::get("s", "/quote").param("symbol", "AAPL");
        let tickets: Vec<_> = (0..50)
            .map(|_| rig.core.queue_request(same()).unwrap())
            .collect();
        let other = rig
            .core
            .queue_request(Request::get("s", "/quote").param("symbol", "MSFT"))
            .unwrap();
        std::thread::scope(|s| {
            let leader = s.spawn(|| rig.work_once().is_some());
            arrived.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(rig.work_all(60), 50, "49 join, MSFT goes alone");
            assert_eq!(rig.core.coalescers[0].waiting(), 49);
            release.send(()).unwrap();
            assert!(leader.join().unwrap());
        });
        for t in tickets {
            let r = t.wait().unwrap();
            assert_eq!(
                (r.status(), r.body()),
                (200, &b"http://10.0.0.1:80/quote?symbol=AAPL"[..])
            );
        }
        assert_eq!(other.wait().unwrap().status(), 200);
        assert_eq!(
            rig.fake("a").sent().len(),
            2,
            "one AAPL call, one MSFT call"
        );
        let s = &rig.core.snapshot().services["s"];
        assert_eq!((s.coalesced, s.successes), (49, 51));
        assert_eq!(s.providers["a"].requests, 2);
    }

    #[test]
    fn a_job_handed_a_seat_while_its_twin_is_on_the_wire_waits_beside_it() {
        use crate::engine::dispatch::drive;
        let rig = Rig::new(&Rig::config(&["a"], "pool = { max_connections = 2 }"));
        let (arrived_1, release_1) = hold(&rig, 200);
        let (arrived_2, release_2) = hold(&rig, 200);
        let (arrived_twin, release_twin) = hold(&rig, 200);
        let busy: Vec<_> = ["/w1", "/w2"]
            .map(|p| rig.core.queue_request(Request::get("s", p)).unwrap())
            .into();
        std::thread::scope(|s| {
            // Both seats taken; then two identical jobs miss the map and park for a seat.
            let first = s.spawn(|| rig.work_once().unwrap().next);
            arrived_1.recv_timeout(Duration::from_secs(5)).unwrap();
            let second = s.spawn(|| rig.work_once().unwrap().next);
            arrived_2.recv_timeout(Duration::from_secs(5)).unwrap();
            let twins: Vec<_> = (0..2)
                .map(|_| rig.core.queue_request(Request::get("s", "/q")).unwrap())
                .collect();
            assert_eq!(rig.work_all(5), 2);
            // The first seat freed goes to one twin, which leads the call.
            release_1.send(()).unwrap();
            let leader = first.join().unwrap().expect("handed the seat");
            let led = s.spawn(|| drive(&rig.core, *leader));
            arrived_twin.recv_timeout(Duration::from_secs(5)).unwrap();
            // The second seat goes to the other twin: it gives the seat back and joins.
            release_2.send(()).unwrap();
            let late = second.join().unwrap().expect("handed the seat");
            assert!(drive(&rig.core, *late).next.is_none());
            let waiting = rig.core.coalescers[0].waiting();
            release_twin.send(()).unwrap();
            led.join().unwrap();
            assert_eq!(waiting, 1);
            for t in twins {
                assert_eq!(t.wait().unwrap().status(), 200);
            }
        });
        for t in busy {
            assert_eq!(t.wait().unwrap().status(), 200);
        }
        assert_eq!(rig.fake("a").sent().len(), 3, "the twins made one call");
        assert_eq!(rig.core.requests_under_way(), 0);
    }

    #[test]
    fn a_follower_whose_deadline_passes_times_out_alone() {
        let rig = Rig::new(&Rig::config(&["a"], ""));
        let (arrived, release) = hold(&rig, 200);
        let leader_ticket = rig.core.queue_request(Request::get("s", "/q")).unwrap();
        let short = Request::get("s", "/q").timeout(Duration::from_millis(50));
        let impatient = rig.core.queue_request(short).unwrap();
        let patient = rig.core.queue_request(Request::get("s", "/q")).unwrap();
        std::thread::scope(|s| {
            let leader = s.spawn(|| rig.work_once().is_some());
            arrived.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(rig.work_all(5), 2);
            rig.clock.advance(Duration::from_millis(60));
            assert!(matches!(impatient.wait(), Err(Error::Timeout { .. })));
            release.send(()).unwrap();
            assert!(leader.join().unwrap());
        });
        assert_eq!(leader_ticket.wait().unwrap().status(), 200);
        assert_eq!(
            patient.wait().unwrap().status(),
            200,
            "not cancelled by the other"
        );
        assert_eq!(rig.fake("a").sent().len(), 1);
        assert_eq!(rig.core.requests_under_way(), 0);
    }

    #[test]
    fn when_the_shared_call_fails_each_follower_goes_on_by_itself() {
        let rig = Rig::new(&Rig::config(&["a", "b"], "strategy = \"round_robin\""));
        let (arrived, release) = hold(&rig, 503);
        let tickets: Vec<_> = (0..4)
            .map(|_| rig.core.queue_request(Request::get("s", "/q")).unwrap())
            .collect();
        std::thread::scope(|s| {
            let leader = s.spawn(|| rig.work_once().is_some());
            arrived.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(rig.work_all(5), 3);
            release.send(()).unwrap();
            assert!(leader.join().unwrap());
        });
        rig.work_all(20);
        for t in tickets {
            let r = t.wait().unwrap();
            assert_eq!((r.status(), r.provider(), r.attempts()), (200, "b", 2));
        }
        assert_eq!(
            rig.fake("a").sent().len(),
            1,
            "the failing call was made once"
        );
    }

    #[test]
    fn posts_and_endpoints_that_say_no_go_alone() {
        let config = Rig::config(&["a"], "")
            + "endpoints = { quote = \"/quote\", news = \"/news\" }\n\
               [services.s.endpoints.news]\ncoalesce = false\n";
        let rig = Rig::new(&config);
        let (arrived, release) = hold(&rig, 200);
        let first = rig.core.queue_request(Request::get("s", "news")).unwrap();
        let second = rig.core.queue_request(Request::get("s", "news")).unwrap();
        let post = Request::new(Method::Post, "s", "quote").body(b"x".to_vec());
        let posted = [
            rig.core.queue_request(post.clone()).unwrap(),
            rig.core.queue_request(post).unwrap(),
        ];
        std::thread::scope(|s| {
            let leader = s.spawn(|| rig.work_once().is_some());
            arrived.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(rig.work_all(5), 3);
            assert_eq!(rig.core.coalescers[0].waiting(), 0);
            release.send(()).unwrap();
            assert!(leader.join().unwrap());
        });
        for t in [first, second].into_iter().chain(posted) {
            assert_eq!(t.wait().unwrap().status(), 200);
        }
        assert_eq!(rig.fake("a").sent().len(), 4);
    }
}
