//! The event loop of a run: opens the connections (at `--connect-rate`),
//! wakes open-loop flows as their messages fall due, drives the flows,
//! reopens the ones that fail, and cuts the run into intervals.

use super::datagram::{self, Datagram};
use super::flow::{Flow, FlowError, Origin, Outcome, Pacing, Turn};
use super::record::Recorder;
use super::report::nanos;
use super::schedule::{Schedule, Spread};
use super::{BenchMismatch, Error, Latency, Mode, Observer, Plan, Report};
use crate::clock::Clock;
use crate::net::{cpu_time, explain, Close, Network, SocketId};
use std::io;
use std::mem;
use std::time::Duration;

/// Size of the read and compare buffers shared by all flows.
const SCRATCH_SIZE: usize = 64 * 1024;

/// A connection slot's socket.
enum Conn {
    Tcp(Flow),
    Udp(Datagram),
}

impl Conn {
    fn id(&self) -> SocketId {
        match self {
            Conn::Tcp(flow) => flow.id,
            Conn::Udp(datagram) => datagram.id,
        }
    }

    fn slot(&self) -> u64 {
        match self {
            Conn::Tcp(flow) => flow.slot(),
            Conn::Udp(datagram) => datagram.slot(),
        }
    }

    fn resume_at(&self) -> u64 {
        match self {
            Conn::Tcp(flow) => flow.resume_at(),
            Conn::Udp(datagram) => datagram.resume_at(),
        }
    }

    fn drive<N: Network>(
        &mut self,
        net: &mut N,
        turn: &mut Turn<'_>,
    ) -> Result<Outcome, FlowError> {
        match self {
            Conn::Tcp(flow) => flow.drive(net, turn),
            Conn::Udp(datagram) => Ok(datagram.drive(net, turn)?),
        }
    }
}

/// Where the measurement stands: the interval under way.
struct Cuts {
    /// When the measurement began (the warm-up ended).
    began: Duration,
    /// When the current interval began, and when it ends.
    last: Duration,
    next: Duration,
    /// Scheduled events due, and CPU time used, when it began.
    due: u64,
    cpu: Option<Duration>,
}

/// A run between turns.
struct Run<'a, N, C> {
    net: &'a mut N,
    clock: &'a C,
    plan: &'a Plan,
    start: Duration,
    pacing: Pacing,
    /// Open-loop connect mode: when each connection is due.
    connects: Option<Schedule>,
    /// `--connect-rate`: when each slot opens.
    ramp: Option<Schedule>,
    /// By socket id.
    conns: Vec<Option<Conn>>,
    /// Each slot's socket, while it has one.
    slots: Vec<Option<SocketId>>,
    /// Open-loop connect mode: slots without a connection.
    free: Vec<u64>,
    /// Slots opened for the first time (open-loop connect mode:
    /// connections opened).
    opened: u64,
    /// Open loop: scheduled events whose slot has been woken.
    woken: u64,
    /// Connections that sent a byte, and when the last of the first
    /// `connections` did.
    up: usize,
    connected_at: Option<Duration>,
    record: Recorder,
    again: Vec<SocketId>,
}

/// Runs `plan` on `net` and `clock`, telling `observer` of each interval.
pub fn run<N: Network>(
    net: &mut N,
    clock: &impl Clock,
    plan: &Plan,
    observer: &mut impl Observer,
) -> Result<Report, Error> {
    plan.check()?;
    let start_event = plan.start(net.capabilities().name);
    let start = clock.now();
    let schedule = plan.rate.map(|rate| Schedule::new(start, rate));
    let slots = plan.connections as u64;
    let connect_mode = plan.mode == Mode::Connect;
    let mut run = Run {
        net,
        clock,
        plan,
        start,
        pacing: match schedule.filter(|_| !connect_mode) {
            Some(schedule) => Pacing::Open(Spread { schedule, slots }),
            None => Pacing::Closed,
        },
        connects: schedule.filter(|_| connect_mode),
        ramp: plan.connect_rate.map(|rate| Schedule::new(start, rate)),
        conns: Vec::new(),
        slots: vec![None; plan.connections],
        free: (0..slots).rev().collect(),
        opened: 0,
        woken: 0,
        up: 0,
        connected_at: None,
        record: Recorder::new(schedule.is_some()),
        again: Vec::new(),
    };
    let measure_from = start + plan.warmup;
    let deadline = measure_from + plan.duration;
    let mut incoming = vec![0; SCRATCH_SIZE].into_boxed_slice();
    let mut expected = vec![0; SCRATCH_SIZE].into_boxed_slice();
    // Sockets to drive, and the batch being driven (two buffers, so that
    // neither is allocated anew each turn).
    let mut ready = Vec::new();
    let mut batch = Vec::new();
    let mut cuts: Option<Cuts> = None;
    // UDP sockets whose datagram was lost get no wake-up: look at them all
    // now and then.
    let loss_sweep = plan.udp.then(|| datagram::sweep(plan));
    let mut next_sweep = start;
    loop {
        let now = clock.now();
        if cuts.is_none() && now >= measure_from {
            run.record.restart();
            cuts = Some(Cuts {
                began: now,
                last: now,
                next: now + plan.interval,
                due: run.due(now),
                cpu: cpu_time(),
            });
        }
        if let Some(cuts) = &mut cuts {
            if now >= deadline {
                break;
            }
            if now >= cuts.next {
                run.cut(cuts, now, observer)?;
            }
        }
        run.open_due(now)?;
        run.wake_due(now, &mut ready);
        if let Some(interval) = loss_sweep.filter(|_| now >= next_sweep) {
            ready.extend(run.conns.iter().flatten().map(Conn::id));
            next_sweep = now + interval;
        }
        mem::swap(&mut ready, &mut batch);
        for id in batch.drain(..) {
            run.turn(id, now, &mut incoming, &mut expected)?;
        }
        let mut wake = match &cuts {
            Some(cuts) => deadline.min(cuts.next),
            None => measure_from,
        };
        wake = wake.min(run.next_due().unwrap_or(wake));
        if loss_sweep.is_some() {
            wake = wake.min(next_sweep);
        }
        let timeout = match run.again.is_empty() {
            true => wake.saturating_sub(clock.now()),
            false => Duration::ZERO,
        };
        ready.append(&mut run.again);
        run.net.wait(Some(timeout), &mut ready)?;
    }
    let mut cuts = cuts.ok_or(Error::Plan("the run ended before it began"))?;
    let end = clock.now();
    run.cut(&mut cuts, end, observer)?;
    for conn in run.conns.iter().flatten() {
        run.net.close(conn.id(), Close::Orderly);
    }
    run.report(start_event, end - cuts.began)
}

impl<N: Network, C: Clock> Run<'_, N, C> {
    /// Scheduled events (messages, or connect-mode connections) due by
    /// `now`.
    fn due(&self, now: Duration) -> u64 {
        match (self.pacing, self.connects) {
            (Pacing::Open(spread), _) => spread.schedule.due(now),
            (Pacing::Closed, Some(connects)) => connects.due(now),
            (Pacing::Closed, None) => 0,
        }
    }

    /// Ends the interval under way at `now` and tells `observer`.
    fn cut(
        &mut self,
        cuts: &mut Cuts,
        now: Duration,
        observer: &mut impl Observer,
    ) -> io::Result<()> {
        let due = self.due(now);
        let cpu = cpu_time();
        let used = cpu
            .zip(cuts.cpu)
            .map(|(now, then)| now.saturating_sub(then));
        let open = self.slots.iter().flatten().count();
        let span = (cuts.last - cuts.began, now - cuts.last);
        self.record
            .cut(span, due - cuts.due, used, open, |interval, latencies| {
                observer.interval(interval, latencies)
            })?;
        cuts.last = now;
        cuts.due = due;
        cuts.cpu = cpu;
        while cuts.next <= now {
            cuts.next += self.plan.interval;
        }
        Ok(())
    }

    /// Opens the slots `--connect-rate` lets open by `now`, and in
    /// open-loop connect mode the connections due.
    fn open_due(&mut self, now: Duration) -> Result<(), Error> {
        if let Some(connects) = self.connects {
            while self.opened < connects.due(now) {
                let Some(slot) = self.free.pop() else { break };
                let j = self.opened;
                self.open(slot, j, self.plan.local(j), Some(connects.at(j)))?;
                self.opened += 1;
            }
            return Ok(());
        }
        while self.opened < self.plan.connections as u64
            && self.ramp.is_none_or(|ramp| ramp.at(self.opened) <= now)
        {
            let slot = self.opened;
            self.open(slot, 0, self.plan.local(slot), None)?;
            self.opened += 1;
        }
        Ok(())
    }

    /// Adds to `ready` the open-loop flows whose next message fell due.
    fn wake_due(&mut self, now: Duration, ready: &mut Vec<SocketId>) {
        let Pacing::Open(spread) = self.pacing else {
            return;
        };
        let due = spread.schedule.due(now);
        for j in self.woken.max(due.saturating_sub(spread.slots))..due {
            ready.extend(self.slots[(j % spread.slots) as usize]);
        }
        self.woken = self.woken.max(due);
    }

    /// When the next slot opens or scheduled event falls due.
    fn next_due(&self) -> Option<Duration> {
        let opening = match (self.connects, self.ramp) {
            (Some(connects), _) => (!self.free.is_empty()).then(|| connects.at(self.opened)),
            (None, Some(ramp)) => {
                (self.opened < self.plan.connections as u64).then(|| ramp.at(self.opened))
            }
            (None, None) => None,
        };
        let message = match self.pacing {
            Pacing::Open(spread) => Some(spread.schedule.at(self.woken)),
            Pacing::Closed => None,
        };
        match (opening, message) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Opens slot `slot`'s socket, from `local`, at message `first`; a
    /// connect-mode connection may have been due at `scheduled`.
    fn open(
        &mut self,
        slot: u64,
        first: u64,
        local: Option<std::net::IpAddr>,
        scheduled: Option<Duration>,
    ) -> Result<(), Error> {
        let plan = self.plan;
        let conn = match plan.udp {
            true => Conn::Udp(Datagram::open(self.net, plan, slot, first, local)?),
            false => {
                let now = self.clock.now();
                let origin = (plan.mode == Mode::Connect).then_some(Origin {
                    opened: now,
                    scheduled,
                });
                if origin.is_some() {
                    self.record
                        .sent(scheduled.map(|due| now.saturating_sub(due)));
                }
                Conn::Tcp(Flow::open(self.net, plan, slot, first, local, origin)?)
            }
        };
        self.record.opened();
        let id = conn.id();
        self.slots[slot as usize] = Some(id);
        if self.conns.len() <= id.0 {
            self.conns.resize_with(id.0 + 1, || None);
        }
        self.conns[id.0] = Some(conn);
        self.again.push(id);
        Ok(())
    }

    /// Gives the flow on `id` its turn; reopens or frees its slot when its
    /// connection is done or failed.
    fn turn(
        &mut self,
        id: SocketId,
        now: Duration,
        incoming: &mut [u8],
        expected: &mut [u8],
    ) -> Result<(), Error> {
        // Driven in place: a flow is too big to move out and back each turn.
        let Some(conn) = self.conns.get_mut(id.0).and_then(Option::as_mut) else {
            return Ok(());
        };
        let mut turn = Turn {
            now,
            clock: self.clock,
            stamp: None,
            wrote: false,
            plan: self.plan,
            pacing: self.pacing,
            incoming,
            expected,
            record: &mut self.record,
        };
        let (outcome, failed) = match conn.drive(self.net, &mut turn) {
            Ok(outcome) => (outcome, false),
            Err(FlowError::Corrupt(corruption)) => {
                return Err(Error::Mismatch(BenchMismatch(corruption)))
            }
            // Nobody listens: not a failure of one connection.
            Err(FlowError::Io(err)) if err.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(Error::Io(explain(err, self.plan.addr)));
            }
            Err(FlowError::Io(_)) => {
                self.record.error();
                (Outcome::default(), true)
            }
        };
        if outcome.first_write {
            self.up += 1;
            if self.up == self.plan.connections && self.connected_at.is_none() {
                self.connected_at = Some(now - self.start);
            }
        }
        let (slot, resume_at) = (conn.slot(), conn.resume_at());
        if !(failed || outcome.done) {
            if outcome.yielded {
                self.again.push(id);
            }
            return Ok(());
        }
        self.conns[id.0] = None;
        let how = match self.plan.reset {
            true => Close::Reset,
            false => Close::Orderly,
        };
        self.net.close(id, how);
        self.slots[slot as usize] = None;
        match self.connects {
            Some(_) => self.free.push(slot),
            None => self.open(slot, resume_at, self.plan.local(slot), None)?,
        }
        Ok(())
    }

    /// The report of the measured `measured`, or why there is none.
    fn report(self, start: super::Start, measured: Duration) -> Result<Report, Error> {
        let record = self.record;
        let totals = record.totals;
        // A server that never answers (or a connect that never completes)
        // measured nothing: that is a failure, not a rate of zero.
        if totals.bytes == 0 {
            return Err(Error::NoEcho {
                seconds: measured.as_secs_f64(),
                opened: totals.connections_opened,
                errors: totals.errors,
                lost: totals.lost,
            });
        }
        let mut report = Report::derive(start, totals, measured);
        report.intervals = record.intervals;
        report.send_lag_max_ns = record.total_lag_max;
        report.corrected = Latency::of(&record.total_latencies.corrected);
        report.uncorrected = Latency::of(&record.total_latencies.uncorrected);
        report.jitter_ns = record.total_jitter();
        report.first_corruption = record.total_first_corruption;
        report.connected_ns = self.connected_at.map(nanos);
        Ok(report)
    }
}
