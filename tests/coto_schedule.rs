//! The CoTo schedule `p(t)`, the gate draws and their statistics, and the settings checks.

use coto::coto::{
    AdapterGroups, AdapterSlot, CotoConfig, CotoSchedule, GateController, Grouping, Method, Mode,
    ScheduleShape,
};

fn config(initial_p: f64, final_p: f64, stage1_ratio: f64, schedule: ScheduleShape) -> CotoConfig {
    CotoConfig {
        initial_p,
        final_p,
        stage1_ratio,
        schedule,
    }
}

fn assert_p(schedule: &CotoSchedule, step: usize, expected: f64) {
    let p = schedule.p_at(step);
    assert!(
        (p - expected).abs() < 1e-12,
        "p after step {step}: got {p}, expected {expected}"
    );
}

/// Six layers with query and value adapters, as MiniLM with the default targets.
fn minilm_slots() -> Vec<AdapterSlot> {
    (0..6)
        .flat_map(|layer| {
            ["attention.self.query", "attention.self.value"]
                .into_iter()
                .enumerate()
                .map(move |(k, module)| AdapterSlot {
                    index: layer * 2 + k,
                    name: format!("encoder.layer.{layer}.{module}"),
                    layer,
                })
        })
        .collect()
}

#[test]
fn linear_schedule_values() {
    // T = 100, S = ceil(75) = 75.
    let schedule = CotoSchedule::new(config(0.1, 1.0, 0.75, ScheduleShape::Linear), 100).unwrap();
    assert_eq!(schedule.stage1_steps(), 75);
    assert_p(&schedule, 0, 0.1);
    assert_p(&schedule, 1, 0.1 + 0.9 / 75.0);
    assert_p(&schedule, 30, 0.1 + 0.9 * 30.0 / 75.0);
    assert_p(&schedule, 75, 1.0);
    assert_p(&schedule, 76, 1.0);
    assert_p(&schedule, 100, 1.0);
}

#[test]
fn sine_schedule_values() {
    let schedule = CotoSchedule::new(config(0.2, 0.8, 0.5, ScheduleShape::Sine), 40).unwrap();
    assert_eq!(schedule.stage1_steps(), 20);
    assert_p(&schedule, 0, 0.2);
    assert_p(&schedule, 10, 0.2 + 0.6 * (std::f64::consts::FRAC_PI_2 * 0.5).sin());
    assert_p(&schedule, 20, 0.8);
    assert_p(&schedule, 35, 0.8);
}

#[test]
fn exponential_schedule_values() {
    let schedule = CotoSchedule::new(config(0.0, 1.0, 1.0, ScheduleShape::Exponential), 10).unwrap();
    assert_eq!(schedule.stage1_steps(), 10);
    let e = std::f64::consts::E;
    assert_p(&schedule, 0, 0.0);
    assert_p(&schedule, 5, ((0.5f64).exp() - 1.0) / (e - 1.0));
    assert_p(&schedule, 10, 1.0);
}

#[test]
fn stage1_length_rounds_up() {
    // 7 · 0.75 = 5.25, so S = 6.
    let schedule = CotoSchedule::new(config(0.1, 1.0, 0.75, ScheduleShape::Linear), 7).unwrap();
    assert_eq!(schedule.stage1_steps(), 6);
    assert_p(&schedule, 3, 0.1 + 0.9 * 3.0 / 6.0);
    // 10 · 0.7 is 7.000000000000001 in floating point, which still means S = 7.
    let schedule = CotoSchedule::new(config(0.1, 1.0, 0.7, ScheduleShape::Linear), 10).unwrap();
    assert_eq!(schedule.stage1_steps(), 7);
    // A tiny ratio still gives one step of stage 1.
    let schedule = CotoSchedule::new(config(0.1, 1.0, 0.001, ScheduleShape::Linear), 10).unwrap();
    assert_eq!(schedule.stage1_steps(), 1);
}

#[test]
fn p_is_capped_at_final_p() {
    let schedule = CotoSchedule::new(config(0.3, 0.6, 0.5, ScheduleShape::Linear), 8).unwrap();
    assert_eq!(schedule.stage1_steps(), 4);
    assert_p(&schedule, 2, 0.45);
    for step in 4..=8 {
        assert_p(&schedule, step, 0.6);
    }
}

#[test]
fn invalid_settings_name_the_value() {
    let cases = [
        (config(-0.1, 1.0, 0.75, ScheduleShape::Linear), 10, "initial_p"),
        (config(0.1, 1.5, 0.75, ScheduleShape::Linear), 10, "final_p"),
        (config(0.9, 0.5, 0.75, ScheduleShape::Linear), 10, "initial_p"),
        (config(0.1, 1.0, 0.0, ScheduleShape::Linear), 10, "stage1_ratio"),
        (config(0.1, 1.0, 1.5, ScheduleShape::Linear), 10, "stage1_ratio"),
        (config(0.1, 1.0, f64::NAN, ScheduleShape::Linear), 10, "stage1_ratio"),
        (config(0.1, 1.0, 0.75, ScheduleShape::Linear), 0, "total_steps"),
    ];
    for (config, steps, name) in cases {
        let err = CotoSchedule::new(config.clone(), steps).unwrap_err().to_string();
        assert!(err.contains(name), "{config:?}, T = {steps}: message `{err}` does not name {name}");
    }
}

#[test]
fn empty_group_is_rejected() {
    let err = AdapterGroups::from_indices(vec![vec![0], vec![]], 1).unwrap_err().to_string();
    assert!(err.contains("group 1"), "{err}");
    let grouping = Grouping::Custom(vec![vec!["encoder.layer.9".into()]]);
    let err = AdapterGroups::build(&grouping, &minilm_slots()).unwrap_err().to_string();
    assert!(err.contains("encoder.layer.9"), "{err}");
}

#[test]
fn default_grouping_is_per_layer() {
    let groups = AdapterGroups::build(&Grouping::Layer, &minilm_slots()).unwrap();
    assert_eq!(groups.len(), 6);
    assert_eq!(groups.members()[2], vec![4, 5]);
    let groups = AdapterGroups::build(&Grouping::Adapter, &minilm_slots()).unwrap();
    assert_eq!(groups.len(), 12);
    let custom = Grouping::Custom(vec![
        vec!["encoder.layer.0".into(), "encoder.layer.1".into(), "encoder.layer.2".into()],
        vec!["encoder.layer.3".into(), "encoder.layer.4".into(), "encoder.layer.5".into()],
    ]);
    let groups = AdapterGroups::build(&custom, &minilm_slots()).unwrap();
    assert_eq!(groups.members()[1], vec![6, 7, 8, 9, 10, 11]);
}

#[test]
fn layer_group_switches_together() {
    let groups = AdapterGroups::build(&Grouping::Layer, &minilm_slots()).unwrap();
    let schedule = CotoSchedule::new(CotoConfig::default(), 1000).unwrap();
    let mut controller = GateController::new(Method::Coto, schedule, groups, 7);
    for _ in 0..200 {
        let gates = controller.gates(Mode::Train);
        for layer in 0..6 {
            assert_eq!(gates.is_active(2 * layer), gates.is_active(2 * layer + 1));
        }
        controller.after_optimizer_step();
    }
}

/// Each group's on-frequency over many draws matches `p / (1 − (1 − p)^k)`: a group is on with
/// probability `p` independently, conditioned on at least one of the `k` groups being on (the
/// redraw), and `P(g on | any on) = P(g on) / P(any on)` because "g on" implies "any on".
#[test]
fn on_frequency_matches_conditional_probability() {
    const DRAWS: usize = 20_000;
    let k = 6usize;
    for (seed, p) in [(1u64, 0.1f64), (2, 0.25), (3, 0.5), (4, 0.9)] {
        let mut on = vec![false; k];
        let mut rng = coto::rng::seeded(seed, 0);
        let mut counts = vec![0usize; k];
        for _ in 0..DRAWS {
            coto::coto::draw_groups(p, &mut on, &mut rng);
            assert!(on.iter().any(|&s| s), "a draw left every group off");
            for (count, &state) in counts.iter_mut().zip(&on) {
                *count += state as usize;
            }
        }
        let expected = p / (1.0 - (1.0 - p).powi(k as i32));
        let standard_error = (expected * (1.0 - expected) / DRAWS as f64).sqrt();
        for (group, &count) in counts.iter().enumerate() {
            let frequency = count as f64 / DRAWS as f64;
            assert!(
                (frequency - expected).abs() <= 4.0 * standard_error,
                "p = {p}, group {group}: frequency {frequency:.4}, expected {expected:.4} ± {:.4}",
                4.0 * standard_error
            );
        }
    }
}

#[test]
fn zero_p_keeps_exactly_one_group_on() {
    let mut on = vec![false; 5];
    let mut rng = coto::rng::seeded(9, 0);
    for _ in 0..100 {
        coto::coto::draw_groups(0.0, &mut on, &mut rng);
        assert_eq!(on.iter().filter(|&&s| s).count(), 1);
    }
}

#[test]
fn eval_turns_every_gate_on_and_training_draw_returns() {
    let groups = AdapterGroups::build(&Grouping::Layer, &minilm_slots()).unwrap();
    let schedule = CotoSchedule::new(config(0.1, 1.0, 0.75, ScheduleShape::Linear), 100).unwrap();
    let mut controller = GateController::new(Method::Coto, schedule, groups, 3);
    // Find a step whose draw has some adapter off (p is 0.1 at the start, so this is quick).
    while controller.gates(Mode::Train).count_active() == 12 {
        controller.after_optimizer_step();
    }
    let training_draw = controller.gates(Mode::Train);
    assert_eq!(controller.gates(Mode::Eval).count_active(), 12);
    assert_eq!(controller.gates(Mode::Train), training_draw);
}

#[test]
fn plain_lora_keeps_every_gate_on() {
    let groups = AdapterGroups::build(&Grouping::Layer, &minilm_slots()).unwrap();
    let schedule = CotoSchedule::new(CotoConfig::default(), 10).unwrap();
    let mut controller = GateController::new(Method::Lora, schedule, groups, 3);
    for _ in 0..10 {
        assert_eq!(controller.gates(Mode::Train).count_active(), 12);
        assert_eq!(controller.p(), 1.0);
        controller.after_optimizer_step();
    }
}

#[test]
fn draws_are_reproducible_and_restorable() {
    let make = |seed| {
        let groups = AdapterGroups::build(&Grouping::Adapter, &minilm_slots()).unwrap();
        let schedule = CotoSchedule::new(CotoConfig::default(), 50).unwrap();
        GateController::new(Method::Coto, schedule, groups, seed)
    };
    let run = |controller: &mut GateController, steps: usize| {
        (0..steps)
            .map(|_| {
                controller.after_optimizer_step();
                controller.gates(Mode::Train)
            })
            .collect::<Vec<_>>()
    };
    let mut first = make(11);
    let mut second = make(11);
    assert_eq!(run(&mut first, 20), run(&mut second, 20));

    let saved = first.state();
    let continued = run(&mut first, 10);
    let mut resumed = make(99);
    resumed.restore(&saved);
    assert_eq!(resumed.step(), 20);
    assert_eq!(run(&mut resumed, 10), continued);
}
