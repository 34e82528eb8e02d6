//! The record that makes an injection reversible: every field `inject`
//! set, with the value it had before (or that it had none), kept as JSON
//! in an annotation on the pod template. `uninject` plays it backwards.
//!
//! A path is a list of keys from the pod template; under a list of named
//! items (`containers`, `volumes`) a key is an item's name. An entry whose
//! path ends at a list item without a `was` means "inject added this item".

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

/// The annotation that holds the record.
pub(crate) const ANNOTATION: &str = "healthproxy.io/injected";

/// The version of the record's format.
const VERSION: u32 = 1;

/// One field set by `inject`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Where, from the pod template.
    pub(crate) at: Vec<String>,
    /// What it was; absent when the field (or item) did not exist.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub(crate) was: Option<Value>,
}

/// A `was: null` is a field that held null, not an absent one.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Everything `inject` changed in one pod template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The format's version.
    pub(crate) v: u32,
    /// The changes, in the order they were made.
    pub(crate) changes: Vec<Entry>,
}

/// Makes changes to a pod template and records them.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    record: Record,
    /// The paths of the maps, lists and items inject created (joined by
    /// NUL), which undo removes whole: a change under one is not recorded.
    created: HashSet<String>,
}

impl Recorder {
    /// A recorder with nothing recorded.
    pub(crate) fn new() -> Self {
        Recorder {
            record: Record {
                v: VERSION,
                changes: Vec::new(),
            },
            created: HashSet::new(),
        }
    }

    /// Whether a change at `at` is already undone by an earlier one (a
    /// map or list that did not exist and will be removed whole). In the
    /// path's length, not the number of changes: a pod of thousands of
    /// containers must not cost their square (issue 27).
    fn covered(&self, at: &[&str]) -> bool {
        let mut key = String::new();
        for (i, step) in at.iter().take(at.len().saturating_sub(1)).enumerate() {
            if i > 0 {
                key.push('\0');
            }
            key.push_str(step);
            if self.created.contains(&key) {
                return true;
            }
        }
        false
    }

    fn push(&mut self, at: &[&str], was: Option<Value>) {
        if self.covered(at) {
            return;
        }
        if was.is_none() {
            self.created.insert(at.join("\0"));
        }
        self.record.changes.push(Entry {
            at: at.iter().map(|s| s.to_string()).collect(),
            was,
        });
    }

    /// Sets the field at `at` (its parent must exist) to `value`.
    pub(crate) fn set(&mut self, root: &mut Value, at: &[&str], value: Value) {
        let parent = &at[..at.len() - 1];
        let map = lookup(root, parent)
            .and_then(Value::as_mapping_mut)
            .expect("the parent of a field inject sets exists");
        self.set_in(map, at, value);
    }

    /// Sets the field at `at` to `value` in `map`, the mapping at `at`'s
    /// parent, which the caller found (in a list of many, by index rather
    /// than by a search for its name).
    pub(crate) fn set_in(&mut self, map: &mut Mapping, at: &[&str], value: Value) {
        let key = *at.last().expect("a path has a key");
        self.push(at, map.get(key).cloned());
        map.insert(Value::from(key), value);
    }

    /// Makes sure the map at `at` exists (recording it when it did not).
    pub(crate) fn ensure_map(&mut self, root: &mut Value, at: &[&str]) {
        if !lookup(root, at).is_some_and(|v| v.is_mapping()) {
            self.set(root, at, Value::Mapping(Mapping::new()));
        }
    }

    /// Adds the named `item` to the list at `at`, first or last; creates
    /// the list when there is none.
    pub(crate) fn add_item(&mut self, root: &mut Value, at: &[&str], item: Value, first: bool) {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .expect("an added item has a name")
            .to_string();
        match lookup(root, at) {
            Some(Value::Sequence(list)) => {
                if first {
                    list.insert(0, item);
                } else {
                    list.push(item);
                }
                let mut path: Vec<&str> = at.to_vec();
                path.push(&name);
                self.push(&path, None);
            }
            _ => self.set(root, at, Value::Sequence(vec![item])),
        }
    }

    /// The record, as the annotation's JSON text.
    pub(crate) fn finish(self) -> String {
        serde_json::to_string(&self.record).expect("a record serialises")
    }
}

/// The value at `at`, stepping into lists by item name.
pub(crate) fn lookup<'a>(root: &'a mut Value, at: &[&str]) -> Option<&'a mut Value> {
    let mut here = root;
    for key in at {
        here = match here {
            Value::Mapping(m) => m.get_mut(*key)?,
            Value::Sequence(list) => list
                .iter_mut()
                .find(|item| item.get("name").and_then(Value::as_str) == Some(key))?,
            _ => return None,
        };
    }
    Some(here)
}

/// Plays `record` backwards on `template`. Returns the paths it could not
/// restore because they were changed since (for a warning).
pub(crate) fn undo(template: &mut Value, record: &Record) -> Vec<String> {
    let mut lost = Vec::new();
    // Items' indices by name, per list: one search per list rather than
    // one per change (thousands of containers, issue 27). Dropped when a
    // change may move or replace a list: one above a container's fields.
    let mut index = Index::default();
    for entry in record.changes.iter().rev() {
        let path: Vec<&str> = entry.at.iter().map(String::as_str).collect();
        let Some((key, parent)) = path.split_last() else {
            continue;
        };
        if path.len() < 4 {
            index.clear();
        }
        match (index.lookup(template, parent), &entry.was) {
            (Some(Value::Mapping(m)), Some(was)) => {
                m.insert(Value::from(*key), was.clone());
            }
            (Some(Value::Mapping(m)), None) => {
                m.shift_remove(*key);
            }
            (Some(Value::Sequence(list)), None) => {
                list.retain(|item| item.get("name").and_then(Value::as_str) != Some(key));
                index.clear();
            }
            _ => lost.push(entry.at.join(".")),
        }
    }
    lost
}

/// [`lookup`] with each list's items indexed by name once.
#[derive(Default)]
struct Index(std::collections::HashMap<String, std::collections::HashMap<String, usize>>);

impl Index {
    fn clear(&mut self) {
        self.0.clear();
    }

    fn lookup<'a>(&mut self, root: &'a mut Value, at: &[&str]) -> Option<&'a mut Value> {
        let mut here = root;
        let mut path = String::new();
        for key in at {
            here = match here {
                Value::Mapping(m) => m.get_mut(*key)?,
                Value::Sequence(list) => {
                    let names = self.0.entry(path.clone()).or_insert_with(|| {
                        // The first item of a name wins, as in `lookup`.
                        let named = list
                            .iter()
                            .enumerate()
                            .filter_map(|(i, item)| Some((item.get("name")?.as_str()?.to_string(), i)));
                        named.collect::<Vec<_>>().into_iter().rev().collect()
                    });
                    let i = *names.get(*key)?;
                    list.get_mut(i)?
                }
                _ => return None,
            };
            path.push('\0');
            path.push_str(key);
        }
        Some(here)
    }
}

/// Why a record's annotation cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unreadable {
    /// Not a string.
    #[error("is not text")]
    NotText,
    /// Not a record in JSON.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Written by another version of the format.
    #[error("version {0} is not {VERSION}")]
    Version(u32),
}

/// Reads the record in `template`'s annotation, if it has one.
pub(crate) fn read(template: &Value) -> Option<Result<Record, Unreadable>> {
    let text = template.get("metadata")?.get("annotations")?.get(ANNOTATION)?;
    let parsed = text
        .as_str()
        .ok_or(Unreadable::NotText)
        .and_then(|t| Ok(serde_json::from_str::<Record>(t)?))
        .and_then(|r| {
            if r.v == VERSION {
                Ok(r)
            } else {
                Err(Unreadable::Version(r.v))
            }
        });
    Some(parsed)
}

/// Removes the record's annotation.
pub(crate) fn remove(template: &mut Value) {
    if let Some(Value::Mapping(a)) = lookup(template, &["metadata", "annotations"]) {
        a.shift_remove(ANNOTATION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_restores_values_absences_nulls_and_list_items_in_place() {
        let text =
            "metadata: {labels: {a: b}}\nspec:\n  x: null\n  y: 1\n  containers: [{name: app, p: 1}]\n";
        let original: Value = serde_yaml_ng::from_str(text).unwrap();
        let mut t = original.clone();
        let mut r = Recorder::new();
        r.ensure_map(&mut t, &["metadata", "annotations"]);
        r.set(&mut t, &["metadata", "annotations", "k"], "v".into());
        r.set(&mut t, &["spec", "x"], 2.into());
        r.set(&mut t, &["spec", "y"], 3.into());
        r.set(&mut t, &["spec", "containers", "app", "p"], 4.into());
        r.set(&mut t, &["spec", "containers", "app", "q"], 5.into());
        r.add_item(
            &mut t,
            &["spec", "containers"],
            serde_yaml_ng::from_str("{name: side}").unwrap(),
            true,
        );
        r.add_item(
            &mut t,
            &["spec", "volumes"],
            serde_yaml_ng::from_str("{name: v}").unwrap(),
            false,
        );
        let json = r.finish();
        assert_eq!(
            r_count(&json),
            7,
            "the annotation's own key is covered by its map: {json}"
        );
        let record: Record = serde_json::from_str(&json).unwrap();
        assert!(undo(&mut t, &record).is_empty());
        assert_eq!(
            serde_yaml_ng::to_string(&t).unwrap(),
            serde_yaml_ng::to_string(&original).unwrap()
        );
    }

    fn r_count(json: &str) -> usize {
        serde_json::from_str::<Record>(json).unwrap().changes.len()
    }
}
