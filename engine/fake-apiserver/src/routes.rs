//! Where a request path goes: a group version's discovery document, or a resource
//! (namespaced or not, by name, with a subresource).

use crate::resources::{by_plural, ResourceType};

/// Where a request goes: a group version's discovery document, or a resource.
pub(crate) enum Route {
    Discovery(String),
    Resource {
        resource: &'static ResourceType,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    },
}

pub(crate) fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (api_version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ((*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        [] => return Some(Route::Discovery(api_version)),
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
            (Some((*namespace).to_owned()), rest)
        }
        rest => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    let resource = by_plural(&api_version, plural)?;
    let scoped_right = match (resource.namespaced, &namespace) {
        (true, None) => name.is_none(),
        (false, Some(_)) => false,
        _ => true,
    };
    scoped_right.then(|| Route::Resource {
        resource,
        namespace,
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}
