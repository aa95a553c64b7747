//! Shard sync, the pure part: which leases to create for the stream's shards, and which
//! finished leases to delete. The Java KCL's `HierarchicalShardSyncer` in spirit.
//!
//! - A shard without a lease gets one. A child of a reshard starts at TRIM_HORIZON
//!   (nothing written to it may be skipped); a shard without parents in the stream
//!   starts at the configured initial position. With LATEST or AT_TIMESTAMP, closed
//!   shards without a lease are skipped: their records are all older than the start.
//! - A closed shard with any descendant that has a lease, however far down its lineage,
//!   was read to its end: its own lease was deleted once its children started. It never
//!   gets a lease again (a new one would read it all again and hold its lineage back).
//!   DynamoDB Streams rolls its shards over about every 4 hours and lists a closed
//!   shard for 24: a chain s0 → s1 → s2 is the normal case, not an exception.
//! - A lease at SHARD_END is deleted once each of its shard's children has a lease
//!   that moved past its starting point; a lease of a shard that left the stream, once
//!   its children have leases or it has none.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::config::InitialPosition;
use crate::lease::Lease;
use crate::position::Checkpoint;
use crate::source::Shard;

/// What shard sync writes: leases to create and finished leases to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardLeasePlan {
    pub create: Vec<Lease>,
    pub delete: Vec<String>,
}

/// The listed shards by id, and their listed children.
struct Lineage<'a> {
    shards: BTreeMap<&'a str, &'a Shard>,
    children: BTreeMap<&'a str, Vec<&'a str>>,
}

impl<'a> Lineage<'a> {
    fn new(shards: &'a [Shard]) -> Self {
        let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for shard in shards {
            for parent in &shard.parent_ids {
                children.entry(parent.as_str()).or_default().push(shard.id.as_str());
            }
        }
        Self {
            shards: shards.iter().map(|s| (s.id.as_str(), s)).collect(),
            children,
        }
    }

    fn children(&self, id: &str) -> &[&'a str] {
        self.children.get(id).map(Vec::as_slice).unwrap_or_default()
    }

    /// Whether any listed descendant of `id` (children, their children, …) is in `leased`.
    fn descendant_leased(&self, id: &str, leased: &HashSet<&str>) -> bool {
        let mut todo: Vec<&str> = self.children(id).to_vec();
        let mut seen: HashSet<&str> = HashSet::new();
        while let Some(next) = todo.pop() {
            if !seen.insert(next) {
                continue;
            }
            if leased.contains(next) {
                return true;
            }
            todo.extend_from_slice(self.children(next));
        }
        false
    }
}

/// The closed shards of `shards` without a lease that are never leased (nor read)
/// again: a listed descendant has a lease, however far down the lineage. Their own
/// lease, if they had one, was deleted at SHARD_END once their children started; shard
/// sync skips them for good (the rule of [`plan_shard_leases`]).
pub fn passed_by_lineage(shards: &[Shard], leases: &[Lease]) -> BTreeSet<String> {
    let leased: HashSet<&str> = leases.iter().map(|l| l.key.as_str()).collect();
    let lineage = Lineage::new(shards);
    lineage
        .shards
        .values()
        .filter(|shard| passed(&lineage, shard, &leased))
        .map(|shard| shard.id.clone())
        .collect()
}

/// Closed, without a lease, and a descendant has one.
fn passed(lineage: &Lineage<'_>, shard: &Shard, leased: &HashSet<&str>) -> bool {
    shard.closed && !leased.contains(shard.id.as_str()) && lineage.descendant_leased(&shard.id, leased)
}

/// Decides lease creation and cleanup from the shard list and the lease table.
pub fn plan_shard_leases(shards: &[Shard], leases: &[Lease], initial: InitialPosition) -> ShardLeasePlan {
    let leased: HashSet<&str> = leases.iter().map(|l| l.key.as_str()).collect();
    let lineage = Lineage::new(shards);
    let mut plan = ShardLeasePlan::default();
    for shard in lineage.shards.values() {
        if leased.contains(shard.id.as_str()) || passed(&lineage, shard, &leased) {
            continue;
        }
        let has_parent = shard
            .parent_ids
            .iter()
            .any(|p| lineage.shards.contains_key(p.as_str()) || leased.contains(p.as_str()));
        let checkpoint = if has_parent {
            Checkpoint::TrimHorizon
        } else {
            match initial {
                InitialPosition::TrimHorizon => Checkpoint::TrimHorizon,
                InitialPosition::Latest if shard.closed => continue,
                InitialPosition::Latest => Checkpoint::Latest,
                InitialPosition::AtTimestamp(_) if shard.closed => continue,
                InitialPosition::AtTimestamp(_) => Checkpoint::AtTimestamp,
            }
        };
        let mut parents = shard.parent_ids.clone();
        parents.sort();
        plan.create.push(Lease::new(&shard.id, checkpoint, parents));
    }
    let started = |key: &str| {
        leases.iter().any(|l| {
            l.key == key
                && !matches!(
                    l.checkpoint,
                    Checkpoint::TrimHorizon | Checkpoint::Latest | Checkpoint::AtTimestamp
                )
        })
    };
    for lease in leases.iter().filter(|l| l.checkpoint.is_shard_end()) {
        let children = lineage.children(&lease.key);
        let listed = lineage.shards.contains_key(lease.key.as_str());
        let delete = if listed {
            !children.is_empty() && children.iter().all(|c| started(c))
        } else {
            children.iter().all(|c| leased.contains(c))
        };
        if delete {
            plan.delete.push(lease.key.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::{RecordPosition, SequenceNumber};

    fn shard(id: &str, parents: &[&str], closed: bool) -> Shard {
        Shard {
            id: id.into(),
            parent_ids: parents.iter().map(|p| p.to_string()).collect(),
            closed,
            hash_range: None,
        }
    }

    fn at(seq: &str) -> Checkpoint {
        Checkpoint::At(RecordPosition {
            sequence: SequenceNumber::parse(seq).expect("digits"),
            subsequence: 0,
        })
    }

    #[test]
    fn children_of_a_split_start_at_the_horizon_even_with_latest() {
        let shards = [
            shard("s0", &[], true),
            shard("s1", &["s0"], false),
            shard("s2", &["s0"], false),
        ];
        let plan = plan_shard_leases(&shards, &[], InitialPosition::Latest);
        let keys: Vec<(&str, &Checkpoint)> = plan.create.iter().map(|l| (l.key.as_str(), &l.checkpoint)).collect();
        assert_eq!(
            keys,
            vec![("s1", &Checkpoint::TrimHorizon), ("s2", &Checkpoint::TrimHorizon)]
        );
    }

    #[test]
    fn trim_horizon_leases_every_shard_with_its_lineage() {
        let shards = [
            shard("s0", &[], true),
            shard("s1", &[], true),
            shard("s2", &["s1", "s0"], false),
        ];
        let plan = plan_shard_leases(&shards, &[], InitialPosition::TrimHorizon);
        assert_eq!(plan.create.len(), 3);
        assert_eq!(
            plan.create[2].parent_shard_ids,
            vec!["s0".to_string(), "s1".to_string()]
        );
    }

    #[test]
    fn existing_leases_are_left_alone() {
        let shards = [shard("s0", &[], false)];
        let leases = [Lease::new("s0", at("5"), vec![])];
        assert_eq!(
            plan_shard_leases(&shards, &leases, InitialPosition::TrimHorizon),
            ShardLeasePlan::default()
        );
    }

    #[test]
    fn a_finished_lease_is_deleted_only_after_its_children_started() {
        let shards = [
            shard("s0", &[], true),
            shard("s1", &["s0"], false),
            shard("s2", &["s0"], false),
        ];
        let mut leases = vec![
            Lease::new("s0", Checkpoint::ShardEnd, vec![]),
            Lease::new("s1", at("10"), vec!["s0".into()]),
            Lease::new("s2", Checkpoint::TrimHorizon, vec!["s0".into()]),
        ];
        assert!(
            plan_shard_leases(&shards, &leases, InitialPosition::TrimHorizon)
                .delete
                .is_empty()
        );
        leases[2].checkpoint = at("11");
        assert_eq!(
            plan_shard_leases(&shards, &leases, InitialPosition::TrimHorizon).delete,
            vec!["s0".to_string()]
        );
    }

    #[test]
    fn a_finished_shard_whose_lease_was_deleted_is_not_leased_again() {
        // A split then a merge: s0 -> s1 + s2, then s2 + s3 -> s4 (s3 an original shard).
        let shards = [
            shard("s0", &[], true),
            shard("s1", &["s0"], false),
            shard("s2", &["s0"], true),
            shard("s3", &[], true),
            shard("s4", &["s2", "s3"], false),
        ];
        // Every finished lease was cleaned up once its children started.
        let leases = [
            Lease::new("s1", at("20"), vec!["s0".into()]),
            Lease::new("s4", at("30"), vec!["s2".into(), "s3".into()]),
        ];
        assert_eq!(
            plan_shard_leases(&shards, &leases, InitialPosition::TrimHorizon),
            ShardLeasePlan::default(),
            "re-creating s0, s2 or s3 would read them again and hold s1 and s4 back"
        );
    }

    #[test]
    fn no_ancestor_is_leased_again_however_far_down_its_lineage_the_lease_is() {
        // DynamoDB Streams after two rollovers: s0 → s1 → s2, all listed; s0's and s1's
        // finished leases were deleted once their children started.
        let shards = [
            shard("s0", &[], true),
            shard("s1", &["s0"], true),
            shard("s2", &["s1"], false),
        ];
        let leases = [Lease::new("s2", at("40"), vec!["s1".into()])];
        assert_eq!(
            plan_shard_leases(&shards, &leases, InitialPosition::TrimHorizon),
            ShardLeasePlan::default(),
            "s0 would be read again from its horizon and hold s1 and s2 back"
        );
        // Kinesis: a split then a merge back, 1 → 2 → 1.
        let shards = [
            shard("a", &[], true),
            shard("b", &["a"], true),
            shard("c", &["a"], true),
            shard("d", &["b", "c"], false),
        ];
        let leases = [Lease::new("d", at("9"), vec!["b".into(), "c".into()])];
        assert!(
            plan_shard_leases(&shards, &leases, InitialPosition::TrimHorizon)
                .create
                .is_empty()
        );
        assert_eq!(
            passed_by_lineage(&shards, &leases),
            BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()])
        );
    }

    #[test]
    fn only_closed_shards_without_a_lease_pass_by_lineage() {
        let shards = [
            shard("s0", &[], true),
            shard("s1", &["s0"], true),
            shard("s2", &["s1"], false),
            shard("x", &[], true),
        ];
        // s1 still has its lease (read to SHARD_END or not): the level stage decides.
        // x has no descendant: nothing says it was read.
        let leases = [
            Lease::new("s1", Checkpoint::ShardEnd, vec!["s0".into()]),
            Lease::new("s2", Checkpoint::TrimHorizon, vec!["s1".into()]),
        ];
        assert_eq!(passed_by_lineage(&shards, &leases), BTreeSet::from(["s0".to_string()]));
        assert!(passed_by_lineage(&shards, &[]).is_empty());
    }

    #[test]
    fn leases_of_shards_that_left_the_stream_are_deleted_once_their_children_have_leases() {
        // s0 aged out of the listing after its children were leased: gone, finished.
        let shards = [shard("s1", &["s0"], false)];
        let leases = vec![
            Lease::new("s0", Checkpoint::ShardEnd, vec![]),
            Lease::new("s1", Checkpoint::TrimHorizon, vec!["s0".into()]),
        ];
        assert_eq!(
            plan_shard_leases(&shards, &leases, InitialPosition::TrimHorizon).delete,
            vec!["s0".to_string()]
        );
        // A finished shard that left the stream with nothing after it.
        let leases = [Lease::new("gone", Checkpoint::ShardEnd, vec![])];
        assert_eq!(
            plan_shard_leases(&[], &leases, InitialPosition::TrimHorizon).delete,
            vec!["gone".to_string()]
        );
        // A listed shard whose children are not listed yet keeps its finished lease.
        let leases = [Lease::new("s5", Checkpoint::ShardEnd, vec![])];
        assert!(
            plan_shard_leases(&[shard("s5", &[], true)], &leases, InitialPosition::TrimHorizon)
                .delete
                .is_empty()
        );
    }
}
