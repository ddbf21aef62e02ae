//! CoTo ("Come Together, But Not Right Now"): progressive adapter dropout for LoRA training.
//!
//! During stage 1 (the first `ceil(T · stage1_ratio)` optimizer steps) each adapter group is on
//! with probability `p(t)`, rising from `initial_p` to `final_p`; a group that is off adds
//! nothing to its layers and costs no forward or backward work.

mod gates;
mod groups;
mod schedule;

pub use gates::{GateController, GateState, Gates, Method, Mode, draw_groups};
pub use groups::{AdapterGroups, AdapterSlot, Grouping};
pub use schedule::{CotoConfig, CotoSchedule, ScheduleShape};
