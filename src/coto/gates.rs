//! CoTo gates: which adapters are on at the current step, drawn from the schedule's `p`.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::groups::AdapterGroups;
use super::schedule::CotoSchedule;
use crate::rng::{self, CotoRng, RngState};

/// The on/off state of every adapter of a model, indexed by adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gates {
    active: Vec<bool>,
}

impl Gates {
    /// Every one of `count` adapters on.
    pub fn all_on(count: usize) -> Self {
        Self {
            active: vec![true; count],
        }
    }

    /// Gates for inference: an empty list, under which every adapter index is on.
    pub fn inference() -> Self {
        Self { active: Vec::new() }
    }

    /// Gates from an explicit per-adapter list.
    pub fn from_vec(active: Vec<bool>) -> Self {
        Self { active }
    }

    /// Whether adapter `index` is on. Indices beyond the list are on, so a model with more
    /// adapters than gates never drops an adapter by accident.
    pub fn is_active(&self, index: usize) -> bool {
        self.active.get(index).copied().unwrap_or(true)
    }

    /// Number of adapters that are on.
    pub fn count_active(&self) -> usize {
        self.active.iter().filter(|&&a| a).count()
    }

    /// The per-adapter states.
    pub fn as_slice(&self) -> &[bool] {
        &self.active
    }
}

/// The training method: CoTo's progressive adapter dropout, or plain LoRA with every gate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Plain LoRA: every adapter is on at every step.
    Lora,
    /// CoTo: adapter groups are switched off at random during stage 1.
    #[default]
    Coto,
}

/// Whether the model is training or evaluating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A training step: the current draw applies.
    Train,
    /// Evaluation or inference: every adapter is on.
    Eval,
}

/// The saved state of a [`GateController`], enough to continue the exact same draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateState {
    /// Optimizer steps taken.
    pub step: usize,
    /// The current draw, per group.
    pub group_on: Vec<bool>,
    /// The generator's position.
    pub rng: RngState,
}

/// Owns the schedule, the groups, the seeded generator and the current draw.
///
/// A group is on iff its uniform draw `u ~ U[0, 1)` satisfies `u <= p`; when every group would
/// be off the whole draw is repeated, so at least one group is always on. Draws change only in
/// [`GateController::after_optimizer_step`], so all micro-batches of an accumulated step share
/// one draw, and an evaluation in between does not disturb it.
#[derive(Debug, Clone)]
pub struct GateController {
    method: Method,
    schedule: CotoSchedule,
    groups: AdapterGroups,
    rng: CotoRng,
    step: usize,
    group_on: Vec<bool>,
}

/// The generator stream reserved for gate draws.
const GATE_STREAM: u64 = 2;

impl GateController {
    /// Creates the controller and makes the first draw at `p(0) = initial_p`.
    pub fn new(method: Method, schedule: CotoSchedule, groups: AdapterGroups, seed: u64) -> Self {
        let mut controller = Self {
            method,
            schedule,
            group_on: vec![true; groups.len()],
            groups,
            rng: rng::seeded(seed, GATE_STREAM),
            step: 0,
        };
        controller.redraw();
        controller
    }

    /// The training method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The schedule.
    pub fn schedule(&self) -> &CotoSchedule {
        &self.schedule
    }

    /// The groups.
    pub fn groups(&self) -> &AdapterGroups {
        &self.groups
    }

    /// Optimizer steps taken so far.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The activation probability of the current draw (1 for plain LoRA).
    pub fn p(&self) -> f64 {
        match self.method {
            Method::Lora => 1.0,
            Method::Coto => self.schedule.p_at(self.step),
        }
    }

    /// Advances the schedule by one optimizer step and draws new gates.
    pub fn after_optimizer_step(&mut self) {
        self.step += 1;
        self.redraw();
    }

    /// The per-adapter gates for `mode`: the current draw in training, all on in evaluation.
    pub fn gates(&self, mode: Mode) -> Gates {
        let count = self.groups.adapter_count();
        if mode == Mode::Eval {
            return Gates::all_on(count);
        }
        let mut active = vec![false; count];
        for (members, &on) in self.groups.members().iter().zip(&self.group_on) {
            for &index in members {
                active[index] = on;
            }
        }
        Gates::from_vec(active)
    }

    /// The current draw, per group.
    pub fn group_states(&self) -> &[bool] {
        &self.group_on
    }

    /// Captures the step, the draw and the generator position.
    pub fn state(&self) -> GateState {
        GateState {
            step: self.step,
            group_on: self.group_on.clone(),
            rng: RngState::capture(&self.rng),
        }
    }

    /// Restores a captured state, as saved by [`GateController::state`].
    pub fn restore(&mut self, state: &GateState) {
        self.step = state.step;
        self.group_on = state.group_on.clone();
        self.rng = state.rng.restore();
    }

    fn redraw(&mut self) {
        if self.method == Method::Lora {
            self.group_on.fill(true);
            return;
        }
        let p = self.schedule.p_at(self.step);
        draw_groups(p, &mut self.group_on, &mut self.rng);
    }
}

/// Fills `on` with one CoTo draw at probability `p`, repeating until at least one group is on.
///
/// At `p = 0` no draw can succeed; the limit of the conditional distribution as `p → 0` is
/// "exactly one group on, chosen uniformly", and that is what is returned.
pub fn draw_groups(p: f64, on: &mut [bool], rng: &mut CotoRng) {
    if on.is_empty() {
        return;
    }
    if p <= 0.0 {
        let chosen = rng.random_range(0..on.len());
        for (group, state) in on.iter_mut().enumerate() {
            *state = group == chosen;
        }
        return;
    }
    loop {
        for state in on.iter_mut() {
            let u: f64 = rng.random();
            *state = u <= p;
        }
        if on.iter().any(|&s| s) {
            return;
        }
    }
}
