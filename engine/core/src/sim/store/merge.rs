//! Strategic merge patches, approximated as the simulator applies them.

use serde_json::{json, Value as Json};

/// A strategic merge patch, approximated: a JSON merge patch, except that lists whose items
/// are all objects with a `name` (containers, env, volumes, ports) are merged item by item on
/// `name`, and `$patch: delete` in such an item removes it. Other `$` directives are ignored.
pub fn strategic_merge(target: &mut Json, patch: &Json) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if fields.get("$patch").and_then(Json::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        strip_directives(&mut replacement);
        *target = replacement;
        return;
    }
    if !target.is_object() {
        *target = json!({});
    }
    let Some(object) = target.as_object_mut() else {
        return;
    };
    for (key, value) in fields {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Json::Null => {
                object.shift_remove(key);
            }
            Json::Array(items) if is_named_list(items) => {
                let existing = object.entry(key.clone()).or_insert_with(|| json!([]));
                let named_target = existing.as_array().is_some_and(|list| is_named_list(list));
                if !named_target {
                    *existing = json!([]);
                }
                if let Some(list) = existing.as_array_mut() {
                    merge_named(list, items);
                }
            }
            Json::Object(_) => {
                let entry = object.entry(key.clone()).or_insert(Json::Null);
                strategic_merge(entry, value);
            }
            _ => {
                let mut value = value.clone();
                strip_directives(&mut value);
                object.insert(key.clone(), value);
            }
        }
    }
}

fn is_named_list(items: &[Json]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|item| item.get("name").is_some_and(Json::is_string))
}

fn merge_named(list: &mut Vec<Json>, items: &[Json]) {
    for item in items {
        let name = item.get("name");
        let position = list
            .iter()
            .position(|existing| existing.get("name") == name);
        let delete = item.get("$patch").and_then(Json::as_str) == Some("delete");
        match (position, delete) {
            (Some(index), true) => {
                list.remove(index);
            }
            (None, true) => {}
            (Some(index), false) => strategic_merge(&mut list[index], item),
            (None, false) => {
                let mut item = item.clone();
                strip_directives(&mut item);
                list.push(item);
            }
        }
    }
}

fn strip_directives(value: &mut Json) {
    match value {
        Json::Object(fields) => {
            fields.retain(|key, _| !key.starts_with('$'));
            fields.values_mut().for_each(strip_directives);
            // Nulls in new content mean nothing to add.
            fields.retain(|_, value| !value.is_null());
        }
        Json::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}
