//! Level stage, pure part: what a run of PlayerState changes does to the level counts
//! and the transitions, cut into chunks that fit one DynamoDB transaction each.

use std::collections::{BTreeMap, BTreeSet};

/// One PlayerState change, reduced to what counting needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelChange {
    /// Level before the change (`None`: the player was not present).
    pub from: Option<String>,
    /// Level after the change (`None`: the player left, was pruned).
    pub to: Option<String>,
    /// `lastUpdated` after the change (event time, ms), for the transition's bucket.
    pub at: Option<i64>,
}

/// A transition count's key: the bucket's start (ms) and `from`␟`to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransitionKey {
    pub bucket_start: i64,
    pub from: String,
    pub to: String,
}

impl TransitionKey {
    /// The `transition` sort key in the Transitions table.
    pub fn name(&self) -> String {
        live_state::transitions::sort_key(&self.from, &self.to)
    }
}

/// Net effect of some changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effect {
    /// Net player-count change per level; levels that net to zero are left out.
    pub deltas: BTreeMap<String, i64>,
    pub transitions: BTreeMap<TransitionKey, i64>,
}

impl Effect {
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.transitions.is_empty()
    }

    /// Distinct items a transaction applying this effect writes.
    pub fn items(&self) -> usize {
        self.deltas.len() + self.transitions.len()
    }
}

/// Sums changes. A change that keeps the level (moto's no-op MODIFY, a keys-only
/// INSERT, a newer event on the same level) contributes nothing.
pub fn effect(changes: &[LevelChange], bucket_ms: i64) -> Effect {
    let mut effect = Effect::default();
    for change in changes {
        if change.from == change.to {
            continue;
        }
        if let Some(from) = &change.from {
            *effect.deltas.entry(from.clone()).or_default() -= 1;
        }
        if let Some(to) = &change.to {
            *effect.deltas.entry(to.clone()).or_default() += 1;
        }
        if let (Some(from), Some(to), Some(at)) = (&change.from, &change.to, change.at) {
            let key = TransitionKey {
                bucket_start: at - at.rem_euclid(bucket_ms),
                from: from.clone(),
                to: to.clone(),
            };
            *effect.transitions.entry(key).or_default() += 1;
        }
    }
    effect.deltas.retain(|_, d| *d != 0);
    effect
}

/// Cuts `changes` into consecutive runs whose effects each write at most `max_items`
/// items (a level or a transition counts once per run however often it changes).
/// Returns the end index (exclusive) of each run.
pub fn chunk_ends(changes: &[LevelChange], bucket_ms: i64, max_items: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut levels: BTreeSet<&str> = BTreeSet::new();
    let mut transitions: BTreeSet<TransitionKey> = BTreeSet::new();
    for (i, change) in changes.iter().enumerate() {
        let mut new_levels: Vec<&str> = [change.from.as_deref(), change.to.as_deref()]
            .into_iter()
            .flatten()
            .filter(|l| !levels.contains(l))
            .collect();
        new_levels.dedup();
        let transition = match (&change.from, &change.to, change.at) {
            (Some(from), Some(to), Some(at)) if from != to => Some(TransitionKey {
                bucket_start: at - at.rem_euclid(bucket_ms),
                from: from.clone(),
                to: to.clone(),
            }),
            _ => None,
        };
        let new_transition = transition.as_ref().is_some_and(|t| !transitions.contains(t));
        let grown = levels.len() + transitions.len() + new_levels.len() + usize::from(new_transition);
        if grown > max_items && i > 0 && !(levels.is_empty() && transitions.is_empty()) {
            ends.push(i);
            levels.clear();
            transitions.clear();
            new_levels = [change.from.as_deref(), change.to.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            new_levels.dedup();
        }
        levels.extend(new_levels);
        if let Some(t) = transition {
            transitions.insert(t);
        }
    }
    if !changes.is_empty() {
        ends.push(changes.len());
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(from: Option<&str>, to: Option<&str>, at: i64) -> LevelChange {
        LevelChange {
            from: from.map(str::to_string),
            to: to.map(str::to_string),
            at: Some(at),
        }
    }

    #[test]
    fn moves_entries_exits_and_no_ops() {
        let effect = effect(
            &[
                change(None, Some("a"), 1_000),       // enters a
                change(Some("a"), Some("b"), 61_000), // a → b
                change(Some("b"), Some("b"), 62_000), // no-op MODIFY
                change(None, None, 0),                // keys-only INSERT
                change(Some("c"), None, 0),           // pruned from c
                change(None, Some("c"), 5_000),
            ],
            60_000,
        );
        assert_eq!(effect.deltas, BTreeMap::from([("b".to_string(), 1)]));
        assert_eq!(
            effect.transitions,
            BTreeMap::from([(
                TransitionKey {
                    bucket_start: 60_000,
                    from: "a".into(),
                    to: "b".into()
                },
                1
            )])
        );
    }

    #[test]
    fn transition_keys_name_one_pair_only() {
        let key = |from: &str, to: &str| {
            TransitionKey {
                bucket_start: 0,
                from: from.into(),
                to: to.into(),
            }
            .name()
        };
        assert_ne!(key("a→b", "c"), key("a", "b→c"));
        assert_eq!(key("a", "b"), "a\u{1f}b");
    }

    #[test]
    fn chunks_stay_under_the_item_limit_and_cover_everything() {
        let changes: Vec<LevelChange> = (0..300)
            .map(|i| {
                change(
                    Some(&format!("l{}", i % 37)),
                    Some(&format!("l{}", (i + 1) % 37)),
                    i * 1_000,
                )
            })
            .collect();
        for max in [3, 10, 99] {
            let ends = chunk_ends(&changes, 60_000, max);
            assert_eq!(ends.last(), Some(&changes.len()));
            let mut start = 0;
            let mut total = Effect::default();
            for end in ends {
                assert!(end > start);
                let part = effect(&changes[start..end], 60_000);
                assert!(part.items() <= max, "{} items > {max}", part.items());
                for (level, d) in part.deltas {
                    *total.deltas.entry(level).or_default() += d;
                }
                start = end;
            }
            total.deltas.retain(|_, d| *d != 0);
            assert_eq!(
                total.deltas,
                effect(&changes, 60_000).deltas,
                "chunks add up to the whole"
            );
        }
        assert!(chunk_ends(&[], 60_000, 10).is_empty());
    }
}
