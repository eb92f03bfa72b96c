//! The order in which SRV targets are tried (RFC 2782): lowest priority first; within a
//! priority, a weighted random order, each target drawn with a chance proportional to its
//! weight among those not drawn yet.

/// One SRV record's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host, without its trailing dot. `.` alone (empty here) means the
    /// service is decidedly not available at this domain.
    pub target: String,
}

/// Whether the records say the service is not offered (a single target `.`).
pub fn refused(records: &[SrvRecord]) -> bool {
    matches!(records, [only] if only.target.is_empty())
}

/// Sorts `records` into the order to try them. `draw(n)` returns a number in `0..=n`
/// (uniform in production; scripted in tests).
pub fn order(mut records: Vec<SrvRecord>, draw: &mut dyn FnMut(u32) -> u32) -> Vec<SrvRecord> {
    records.retain(|r| !r.target.is_empty());
    // Zero weights first within each priority, so that a draw of 0 can pick them and a
    // positive draw passes them (RFC 2782's own arrangement).
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut ordered = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records[0].priority;
        let end = records
            .iter()
            .position(|r| r.priority != priority)
            .unwrap_or(records.len());
        let mut same: Vec<SrvRecord> = records.drain(..end).collect();
        while !same.is_empty() {
            let total: u32 = same.iter().map(|r| u32::from(r.weight)).sum();
            let pick = draw(total).min(total);
            let mut running = 0u32;
            let index = same
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(same.remove(index));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 5060,
            target: target.to_owned(),
        }
    }

    fn targets(records: &[SrvRecord]) -> Vec<&str> {
        records.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn priority_orders_first() {
        let records = vec![srv(20, 0, "c"), srv(10, 5, "a"), srv(30, 1, "d")];
        let ordered = order(records, &mut |_| 0);
        assert_eq!(targets(&ordered), ["a", "c", "d"]);
    }

    #[test]
    fn weights_draw_among_the_same_priority() {
        let records = || vec![srv(10, 1, "light"), srv(10, 9, "heavy"), srv(10, 0, "zero")];
        // A draw of 0 takes the zero-weight target, placed first.
        assert_eq!(targets(&order(records(), &mut |_| 0))[0], "zero");
        // Draws up to 1 fall on "light" (running sum 0, 1), above on "heavy" (10).
        assert_eq!(targets(&order(records(), &mut |_| 1))[0], "light");
        assert_eq!(
            targets(&order(records(), &mut |n| n)),
            ["heavy", "light", "zero"]
        );
        // Over many uniform draws in 0..=10, "heavy" comes first for 2..=10: 9 in 11.
        let mut state = 0x9e37_79b9_u32;
        let mut heavy_first = 0;
        for _ in 0..1000 {
            let ordered = order(records(), &mut |n| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state % (n + 1)
            });
            heavy_first += usize::from(ordered[0].target == "heavy");
        }
        assert!((770..=870).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn a_lone_dot_refuses_the_service() {
        assert!(refused(&[srv(0, 0, "")]));
        assert!(!refused(&[srv(0, 0, "a")]));
        assert!(order(vec![srv(0, 0, "")], &mut |_| 0).is_empty());
    }
}
