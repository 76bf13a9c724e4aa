//! What a merge keeps: the survivor's profile with gaps filled from the
//! merged member, the union of tags, and a referral graph without cycles.

use uuid::Uuid;

use crate::domain::{PROFILE_FIELDS, Profile, set_profile_field};

fn profile_field_empty(p: &Profile, name: &str) -> bool {
    match name {
        "given_name" => p.given_name.is_empty(),
        "family_name" => p.family_name.is_empty(),
        "birth_date" => p.birth_date.is_empty(),
        "gender" => p.gender == 0,
        "region" => p.region.is_empty(),
        "preferred_language" => p.preferred_language.is_empty(),
        "time_zone" => p.time_zone.is_empty(),
        _ => false,
    }
}

/// The survivor keeps every field it has; each empty one takes the merged
/// member's value.
pub fn fill_profile_gaps(survivor: &Profile, merged: &Profile) -> Profile {
    let mut out = survivor.clone();
    for name in PROFILE_FIELDS {
        if profile_field_empty(&out, name) {
            set_profile_field(&mut out, merged, name);
        }
    }
    out
}

/// Both members' tags, sorted and without repeats.
pub fn merge_tags(survivor: &[String], merged: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = survivor.iter().chain(merged).cloned().collect();
    tags.sort();
    tags.dedup();
    tags
}

/// The survivor's referrer after a merge.
///
/// A merge moves the merged member's referrals to the survivor. If the
/// survivor's own referrer chain leads up to the merged member (M referred
/// X, X referred S; merging M into S), keeping it would close a cycle
/// (X now referred by S, S referred by X). The link dropped is then the
/// survivor's own referral: it says the person was referred by someone they
/// (through their other account) had referred first, while the merged
/// member's referrals are older facts about real other people. In every
/// other case the survivor keeps its referrer. The merged member's own
/// referrer is not inherited.
///
/// `chain_above_survivor` is the survivor's referrer chain before the merge,
/// nearest first.
pub fn survivor_referrer_after_merge(
    survivor_referrer: Option<Uuid>,
    merged: Uuid,
    chain_above_survivor: &[Uuid],
) -> Option<Uuid> {
    if chain_above_survivor.contains(&merged) || survivor_referrer == Some(merged) {
        None
    } else {
        survivor_referrer
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_survivor_keeps_its_fields_and_fills_gaps() {
        let survivor = Profile {
            given_name: "Ada".into(),
            region: String::new(),
            ..Profile::default()
        };
        let merged = Profile {
            given_name: "Augusta".into(),
            region: "DE".into(),
            gender: 2,
            ..Profile::default()
        };
        let out = fill_profile_gaps(&survivor, &merged);
        assert_eq!(out.given_name, "Ada");
        assert_eq!(out.region, "DE");
        assert_eq!(out.gender, 2);
        assert_eq!(out.family_name, "");
    }

    #[test]
    fn tags_are_united() {
        let s = ["vip".to_owned(), "app".to_owned()];
        let m = ["vip".to_owned(), "pos".to_owned()];
        assert_eq!(merge_tags(&s, &m), ["app", "pos", "vip"]);
    }

    /// Applies a merge to a referral graph (member -> referrer) the way the
    /// repository does: the merged member's referrals move to the survivor.
    fn merge_graph(graph: &mut HashMap<Uuid, Uuid>, survivor: Uuid, merged: Uuid) {
        let chain = chain(graph, survivor);
        let kept = survivor_referrer_after_merge(graph.get(&survivor).copied(), merged, &chain);
        graph.remove(&merged);
        for referrer in graph.values_mut() {
            if *referrer == merged {
                *referrer = survivor;
            }
        }
        graph.remove(&survivor);
        if let Some(r) = kept {
            graph.insert(survivor, r);
        }
    }

    fn chain(graph: &HashMap<Uuid, Uuid>, from: Uuid) -> Vec<Uuid> {
        let mut out = Vec::new();
        let mut at = from;
        while let Some(&next) = graph.get(&at) {
            if out.contains(&next) || next == from {
                out.push(next);
                break;
            }
            out.push(next);
            at = next;
        }
        out
    }

    fn acyclic(graph: &HashMap<Uuid, Uuid>) -> bool {
        graph.keys().all(|&m| !chain(graph, m).contains(&m))
    }

    #[test]
    fn merging_the_referrer_of_the_survivors_referrer_drops_the_survivors_link() {
        let (m, x, s) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        // M referred X, X referred S.
        let mut graph = HashMap::from([(x, m), (s, x)]);
        merge_graph(&mut graph, s, m);
        assert!(acyclic(&graph));
        assert_eq!(
            graph.get(&x),
            Some(&s),
            "the merged member's referral moves"
        );
        assert_eq!(graph.get(&s), None, "the survivor's own link is dropped");
    }

    #[test]
    fn an_unrelated_referrer_is_kept() {
        let (m, r, s, y) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        // R referred S, M referred Y.
        let mut graph = HashMap::from([(s, r), (y, m)]);
        merge_graph(&mut graph, s, m);
        assert!(acyclic(&graph));
        assert_eq!(graph.get(&s), Some(&r));
        assert_eq!(graph.get(&y), Some(&s));
    }

    #[test]
    fn a_survivor_referred_directly_by_the_merged_member_loses_that_link() {
        let (m, s) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(survivor_referrer_after_merge(Some(m), m, &[m]), None);
        let mut graph = HashMap::from([(s, m)]);
        merge_graph(&mut graph, s, m);
        assert!(graph.is_empty());
    }

    #[test]
    fn the_survivor_above_the_merged_member_keeps_everything() {
        let (s, y, m, z) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        // S referred Y, Y referred M, M referred Z.
        let mut graph = HashMap::from([(y, s), (m, y), (z, m)]);
        merge_graph(&mut graph, s, m);
        assert!(acyclic(&graph));
        assert_eq!(graph.get(&y), Some(&s));
        assert_eq!(graph.get(&z), Some(&s));
    }

    #[test]
    fn every_merge_of_a_long_chain_stays_acyclic() {
        let ids: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
        for survivor in 0..ids.len() {
            for merged in 0..ids.len() {
                if survivor == merged {
                    continue;
                }
                // ids[i+1] was referred by ids[i].
                let mut graph: HashMap<Uuid, Uuid> = ids.windows(2).map(|w| (w[1], w[0])).collect();
                merge_graph(&mut graph, ids[survivor], ids[merged]);
                assert!(acyclic(&graph), "{survivor} <- {merged}");
            }
        }
    }
}
