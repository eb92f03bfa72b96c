//! What the nodes of a cluster share about each destination besides its load: its
//! status and its capacities (siplb-cluster keeps them in the shared store).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::status::DestinationStatus;
use crate::table::Destination;

/// A destination's status and capacities, as one node publishes them to the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedState {
    pub status: DestinationStatus,
    /// Each resource's capacity, in the row's order.
    pub capacities: Vec<(Arc<str>, u32)>,
}

impl SharedState {
    pub(crate) fn of(d: &Destination) -> SharedState {
        SharedState {
            status: d.status.get(),
            capacities: d
                .slots
                .iter()
                .map(|s| (Arc::clone(&s.name), s.capacity()))
                .collect(),
        }
    }

    /// Gives `d` this state; returns whether anything changed.
    pub(crate) fn apply(&self, d: &Destination) -> bool {
        let mut changed = d.status.set_shared(self.status);
        for (name, capacity) in &self.capacities {
            if let Some(slot) = d.slot_named(name) {
                changed |= slot.capacity.swap(*capacity, Ordering::Relaxed) != *capacity;
            }
        }
        changed
    }

    /// `EAD|name=capacity,...` with E, A, D each 0 or 1 (enabled, auto re-enable,
    /// draining). Resource names cannot hold `|`, `,` or `=`.
    pub fn encode(&self) -> String {
        let bit = |b: bool| if b { '1' } else { '0' };
        let mut out = String::with_capacity(8 + 12 * self.capacities.len());
        out.push(bit(self.status.enabled));
        out.push(bit(self.status.auto_reenable));
        out.push(bit(self.status.draining));
        out.push('|');
        for (i, (name, capacity)) in self.capacities.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(name);
            out.push('=');
            out.push_str(&capacity.to_string());
        }
        out
    }

    /// Reads [`SharedState::encode`]'s form; `None` when it is not that.
    pub fn decode(text: &str) -> Option<SharedState> {
        let (flags, list) = text.split_once('|')?;
        let bits: Vec<bool> = flags
            .chars()
            .map(|c| match c {
                '1' => Some(true),
                '0' => Some(false),
                _ => None,
            })
            .collect::<Option<_>>()?;
        let [enabled, auto_reenable, draining] = bits[..] else {
            return None;
        };
        let capacities = list
            .split(',')
            .filter(|item| !item.is_empty())
            .map(|item| {
                let (name, capacity) = item.split_once('=')?;
                Some((Arc::from(name), capacity.parse().ok()?))
            })
            .collect::<Option<_>>()?;
        Some(SharedState {
            status: DestinationStatus {
                enabled,
                auto_reenable,
                draining,
            },
            capacities,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes() {
        let state = SharedState {
            status: DestinationStatus {
                enabled: false,
                auto_reenable: true,
                draining: false,
            },
            capacities: vec![(Arc::from("vm"), 50), (Arc::from("pstn"), 0)],
        };
        assert_eq!(state.encode(), "010|vm=50,pstn=0");
        assert_eq!(SharedState::decode(&state.encode()), Some(state));
        for bad in ["", "01|vm=1", "11x|", "111|vm", "111|vm=-1", "111"] {
            assert_eq!(SharedState::decode(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;
    use crate::{Balancer, DestinationRow};

    #[test]
    fn a_drain_taken_from_another_node_is_reported_here_once_idle() {
        let (balancer, _) =
            Balancer::with_rows([DestinationRow::new(3, 1, "sip:127.0.0.1:5070", "vm=4")]);
        let mut state = balancer.shared_states()[0].1.clone();
        state.status.draining = true;
        state.capacities = vec![(Arc::from("vm"), 9)];
        assert_eq!(balancer.apply_shared(3, &state), Ok(true));
        assert_eq!(
            balancer.apply_shared(3, &state),
            Ok(false),
            "no change twice"
        );
        let d = balancer.destination(3);
        assert!(
            d.as_ref()
                .is_some_and(|d| d.draining && d.resources[0].max == 9)
        );
        assert_eq!(balancer.newly_drained(), vec![3]);
    }
}
