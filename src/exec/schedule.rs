//! What a run starts next, and what follows when a build ends: the scheduling decisions
//! of [`super::dispatcher::run`] as a state with no processes, database or clock in it.
//!
//! ```text
//!   Waiting ──(every planned dependency succeeded, its build recorded)──► ready
//!   ready ──take──► claimed: Running │ refused (its job's concurrency is full): held
//!   held ──retry (next look at the database)──► ready
//!   Running ──ended ok──► Succeeded: dependants whose last dependency it was are ready
//!           ──ended not ok──► Unsuccessful: everything that waits on it, NotRun
//!   Waiting ──cancelled on request──► Unsuccessful (and what waits on it, NotRun)
//!   stop ──► what still waits was not started
//! ```
//!
//! Steps are the plan's indices (plan order): among the ready, the smallest starts first.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::plan::Step;
use crate::graph::JobGraph;

/// Where a step of the plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Waiting,
    Running,
    Succeeded,
    Unsuccessful,
    /// Will not run: something it waits for did not succeed, or the run stopped first.
    /// Its planned build is removed.
    NotRun,
}

/// The steps of a run and where each one is.
#[derive(Debug)]
pub struct Schedule {
    /// The planned steps that wait on each step.
    dependants: Vec<Vec<usize>>,
    state: Vec<State>,
    /// How many planned dependencies each step still waits for.
    waiting_on: Vec<usize>,
    /// Free to start, smallest first; may hold steps that have since left `Waiting`.
    ready: BinaryHeap<Reverse<usize>>,
    /// Ready but refused by the claim (their job's `concurrency` is full elsewhere).
    held: Vec<usize>,
    /// Steps `0..recorded` have their build recorded; a later one cannot start yet.
    recorded: usize,
}

/// A step that will not run, and the step whose failure (or not running) it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRun {
    pub step: usize,
    pub because: usize,
}

impl Schedule {
    /// `dependencies[i]`: the steps step `i` waits on (each smaller or larger than `i`,
    /// but the whole a DAG). Nothing is recorded yet.
    pub fn new(dependencies: &[Vec<usize>]) -> Schedule {
        let n = dependencies.len();
        let mut dependants = vec![Vec::new(); n];
        for (i, deps) in dependencies.iter().enumerate() {
            for &d in deps {
                dependants[d].push(i);
            }
        }
        let waiting_on: Vec<usize> = dependencies.iter().map(Vec::len).collect();
        let ready = (0..n)
            .filter(|&i| waiting_on[i] == 0)
            .map(Reverse)
            .collect();
        Schedule {
            dependants,
            state: vec![State::Waiting; n],
            waiting_on,
            ready,
            held: Vec::new(),
            recorded: 0,
        }
    }

    /// The schedule of a plan: a step waits on the steps of its job's dependencies that
    /// are in the plan (the others are built already).
    pub fn of_plan(steps: &[Step], graph: &JobGraph) -> Schedule {
        let mut index = vec![None; graph.len()];
        for (i, step) in steps.iter().enumerate() {
            index[step.job] = Some(i);
        }
        let dependencies: Vec<Vec<usize>> = steps
            .iter()
            .map(|s| {
                graph
                    .dependencies(s.job)
                    .into_iter()
                    .filter_map(|d| index[d])
                    .collect()
            })
            .collect();
        Schedule::new(&dependencies)
    }

    pub fn len(&self) -> usize {
        self.state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    pub fn state(&self, step: usize) -> State {
        self.state[step]
    }

    /// The builds of steps up to `upto` are recorded now. Returns the newly recorded
    /// steps that will not run any more (their builds are to be removed).
    pub fn recorded(&mut self, upto: usize) -> Vec<usize> {
        let upto = upto.min(self.len());
        let from = self.recorded.min(upto);
        self.recorded = self.recorded.max(upto);
        (from..upto)
            .filter(|&i| self.state[i] == State::NotRun)
            .collect()
    }

    /// Whether step `i`'s build is recorded.
    pub fn is_recorded(&self, step: usize) -> bool {
        step < self.recorded
    }

    /// Up to `free` ready steps to start, in plan order; they are Running once the caller
    /// says so with [`Schedule::started`] (or given back with [`Schedule::hold`] or
    /// [`Schedule::give_back`]). A ready step whose build is not recorded yet stops the
    /// take: so are those of later steps.
    pub fn take(&mut self, free: usize) -> Vec<usize> {
        let mut taken = Vec::new();
        while taken.len() < free
            && let Some(&Reverse(i)) = self.ready.peek()
        {
            if self.state[i] != State::Waiting {
                // Cancelled on request before it started.
                self.ready.pop();
                continue;
            }
            if i >= self.recorded {
                break;
            }
            self.ready.pop();
            taken.push(i);
        }
        taken
    }

    /// A taken step that could not start now (no slot after all): ready again.
    pub fn give_back(&mut self, step: usize) {
        self.ready.push(Reverse(step));
    }

    /// A taken step the claim refused: ready again at the next [`Schedule::retry_held`].
    pub fn hold(&mut self, step: usize) {
        self.held.push(step);
    }

    /// Held steps are tried again (the counts they were refused on have moved).
    pub fn retry_held(&mut self) {
        self.ready.extend(self.held.drain(..).map(Reverse));
    }

    /// A taken step runs.
    pub fn started(&mut self, step: usize) {
        debug_assert_eq!(self.state[step], State::Waiting);
        self.state[step] = State::Running;
    }

    /// A running step ended, well (`ok`: successful or skipped) or not. Well: what waited
    /// only on it is ready. Not: what waits on it, directly or not, will not run.
    pub fn ended(&mut self, step: usize, ok: bool) -> Vec<NotRun> {
        if ok {
            self.state[step] = State::Succeeded;
            for k in 0..self.dependants[step].len() {
                let d = self.dependants[step][k];
                self.waiting_on[d] -= 1;
                if self.waiting_on[d] == 0 && self.state[d] == State::Waiting {
                    self.ready.push(Reverse(d));
                }
            }
            Vec::new()
        } else {
            self.state[step] = State::Unsuccessful;
            self.not_run_after(step)
        }
    }

    /// A step that did not get to start (its claim or its inputs failed) ends with the
    /// run: counted unsuccessful, and nothing follows from it.
    pub fn abandoned(&mut self, step: usize) {
        self.state[step] = State::Unsuccessful;
    }

    /// A cancel request for a step that has not started: it ends unsuccessful, and what
    /// waits on it will not run. `None` when the step is not waiting (running: its
    /// process is cancelled instead; ended: nothing to do).
    pub fn cancel(&mut self, step: usize) -> Option<Vec<NotRun>> {
        if self.state[step] != State::Waiting {
            return None;
        }
        self.state[step] = State::Unsuccessful;
        Some(self.not_run_after(step))
    }

    fn not_run_after(&mut self, step: usize) -> Vec<NotRun> {
        let mut not_run = Vec::new();
        let mut stack = vec![step];
        while let Some(because) = stack.pop() {
            for k in 0..self.dependants[because].len() {
                let d = self.dependants[because][k];
                if self.state[d] == State::Waiting {
                    self.state[d] = State::NotRun;
                    not_run.push(NotRun { step: d, because });
                    stack.push(d);
                }
            }
        }
        not_run
    }

    /// Whether nothing can start without something running ending first: no step is
    /// ready or held (when `stopping`, nothing more starts at all).
    pub fn stalled(&self, stopping: bool) -> bool {
        stopping || self.held.is_empty() && self.ready.is_empty()
    }

    /// The run stops: every step still waiting will not run (returned: not started,
    /// for the reporters), and the builds to remove — of those, and of steps that will
    /// not run and were recorded after [`Schedule::recorded`] last said so. `recorded`:
    /// how many steps have their build recorded by now.
    pub fn stop(&mut self, recorded: usize) -> (Vec<usize>, Vec<usize>) {
        let known = self.recorded;
        let mut not_started = Vec::new();
        let mut discard = Vec::new();
        for (i, s) in self.state.iter_mut().enumerate() {
            let remove = match s {
                State::Waiting => {
                    *s = State::NotRun;
                    not_started.push(i);
                    true
                }
                State::NotRun => i >= known,
                _ => false,
            };
            if remove && i < recorded {
                discard.push(i);
            }
        }
        self.recorded = self.recorded.max(recorded.min(self.len()));
        (not_started, discard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ```text
    ///   0 ─┬─► 1 ─┬─► 3 ──► 4
    ///      └─► 2 ─┘
    ///   5 (alone)
    /// ```
    fn diamond() -> Schedule {
        Schedule::new(&[vec![], vec![0], vec![0], vec![1, 2], vec![3], vec![]])
    }

    /// Steps not run, each with the step it follows.
    fn not_run(pairs: &[(usize, usize)]) -> Vec<NotRun> {
        pairs
            .iter()
            .map(|&(step, because)| NotRun { step, because })
            .collect()
    }

    fn run_all(s: &mut Schedule, free: usize) -> Vec<usize> {
        let taken = s.take(free);
        for &i in &taken {
            s.started(i);
        }
        taken
    }

    #[test]
    fn nothing_starts_before_its_build_is_recorded_and_then_in_plan_order() {
        let mut s = diamond();
        assert_eq!(s.take(8), Vec::<usize>::new());
        assert!(s.recorded(1).is_empty());
        // 5 is ready too, but its build is not recorded: it waits (and so would any later).
        assert_eq!(run_all(&mut s, 8), vec![0]);
        s.recorded(6);
        assert_eq!(run_all(&mut s, 8), vec![5]);
    }

    #[test]
    fn a_step_is_ready_when_its_last_dependency_succeeds_and_free_slots_bound_the_take() {
        let mut s = diamond();
        s.recorded(6);
        assert_eq!(run_all(&mut s, 1), vec![0]);
        assert_eq!(run_all(&mut s, 1), vec![5]);
        assert!(s.ended(0, true).is_empty());
        assert_eq!(run_all(&mut s, 1), vec![1]);
        assert!(s.ended(1, true).is_empty());
        // 3 waits on 2 as well.
        assert_eq!(run_all(&mut s, 8), vec![2]);
        assert!(s.ended(2, true).is_empty());
        assert_eq!(run_all(&mut s, 8), vec![3]);
        s.ended(3, true);
        s.ended(5, true);
        assert_eq!(run_all(&mut s, 8), vec![4]);
        s.ended(4, true);
        assert!(s.stalled(false));
        assert_eq!(s.stop(6), (vec![], vec![]));
        assert!((0..6).all(|i| s.state(i) == State::Succeeded));
    }

    #[test]
    fn a_failure_closes_everything_downstream_and_names_the_step_before_each() {
        let mut s = diamond();
        s.recorded(6);
        run_all(&mut s, 8);
        s.ended(0, true);
        assert_eq!(run_all(&mut s, 8), vec![1, 2]);
        assert_eq!(s.ended(1, false), not_run(&[(3, 1), (4, 3)]));
        // 2 fails as well: 3 is not run once, not twice.
        assert!(s.ended(2, false).is_empty());
        assert_eq!(s.state(3), State::NotRun);
        assert_eq!(s.state(1), State::Unsuccessful);
    }

    #[test]
    fn a_step_not_run_is_not_started_even_if_it_was_ready() {
        // 0 and 1 alone; 2 waits on both.
        let mut s = Schedule::new(&[vec![], vec![], vec![0, 1]]);
        s.recorded(3);
        assert_eq!(run_all(&mut s, 8), vec![0, 1]);
        s.ended(0, true);
        assert_eq!(
            s.ended(1, false),
            vec![NotRun {
                step: 2,
                because: 1
            }]
        );
        assert!(s.take(8).is_empty());
    }

    #[test]
    fn a_refused_claim_holds_the_step_until_the_next_look() {
        let mut s = Schedule::new(&[vec![], vec![]]);
        s.recorded(2);
        let taken = s.take(8);
        assert_eq!(taken, vec![0, 1]);
        s.started(0);
        s.hold(1);
        assert!(!s.stalled(false));
        assert!(s.take(8).is_empty());
        s.retry_held();
        assert_eq!(run_all(&mut s, 8), vec![1]);
        // Given back (no slot after all): first again next time.
        let mut s = Schedule::new(&[vec![], vec![]]);
        s.recorded(2);
        assert_eq!(s.take(1), vec![0]);
        s.give_back(0);
        assert_eq!(s.take(2), vec![0, 1]);
    }

    #[test]
    fn a_cancel_before_the_start_ends_the_step_and_what_waits_on_it() {
        let mut s = diamond();
        s.recorded(6);
        assert_eq!(s.cancel(1), Some(not_run(&[(3, 1), (4, 3)])));
        // Cancelled again, or once running: nothing more from here.
        assert_eq!(s.cancel(1), None);
        run_all(&mut s, 8);
        assert_eq!(s.cancel(0), None);
        s.ended(0, true);
        // 1 is not made ready by its dependency's success: only 2 starts.
        assert_eq!(run_all(&mut s, 8), vec![2]);
    }

    #[test]
    fn a_stop_names_what_did_not_start_and_removes_only_recorded_builds() {
        let mut s = diamond();
        s.recorded(2);
        run_all(&mut s, 8);
        // 0 fails: 1..4 are not run, but only 1 was recorded then (removed by the caller
        // at once); 2, 3, 4 are recorded later.
        let not_run: Vec<usize> = s.ended(0, false).iter().map(|n| n.step).collect();
        assert_eq!(not_run, vec![1, 2, 3, 4]);
        // 5 never started; the run has recorded every build by the time it stops.
        let (not_started, discard) = s.stop(6);
        assert_eq!(not_started, vec![5]);
        assert_eq!(discard, vec![2, 3, 4, 5]);
        // A stop before 4 and 5 are recorded removes what is, the rest was never written.
        let mut s = diamond();
        s.recorded(1);
        let (not_started, discard) = s.stop(4);
        assert_eq!(not_started, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(discard, vec![0, 1, 2, 3]);
    }

    #[test]
    fn recorded_later_steps_already_not_run_are_returned_once() {
        let mut s = diamond();
        s.recorded(1);
        run_all(&mut s, 8);
        s.ended(0, false);
        assert_eq!(s.recorded(3), vec![1, 2]);
        assert_eq!(s.recorded(3), Vec::<usize>::new());
        assert_eq!(s.recorded(6), vec![3, 4]);
        // Going back does not un-record.
        assert!(s.recorded(2).is_empty());
        assert!(s.is_recorded(5));
    }

    #[test]
    fn a_deep_chain_fails_without_recursion_and_a_wide_fan_is_ready_at_once() {
        let n = 100_000;
        let chain: Vec<Vec<usize>> = (0..n)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        let mut s = Schedule::new(&chain);
        s.recorded(n);
        run_all(&mut s, 1);
        assert_eq!(s.ended(0, false).len(), n - 1);
        let fan: Vec<Vec<usize>> = (0..n)
            .map(|i| if i == 0 { vec![] } else { vec![0] })
            .collect();
        let mut s = Schedule::new(&fan);
        s.recorded(n);
        run_all(&mut s, 1);
        s.ended(0, true);
        assert_eq!(s.take(n).len(), n - 1);
    }
}
