//! Trigger matching with the CloudEvents Subscriptions API filter dialects (`exact`, `prefix`,
//! `suffix`, `all`, `any`, `not`) on any context attribute, extensions included. An attribute that is
//! not set matches no `exact`/`prefix`/`suffix` filter.

use switchyard_schemas::config::Filter;
use switchyard_schemas::CloudEvent;

/// Whether `event` matches one filter expression.
pub fn matches(filter: &Filter, event: &CloudEvent) -> bool {
    let attr = |map: &std::collections::BTreeMap<String, String>, test: &dyn Fn(&str, &str) -> bool| {
        map.iter().all(|(name, want)| event.attribute(name).is_some_and(|have| test(&have, want)))
    };
    match filter {
        Filter::Exact(map) => attr(map, &|have, want| have == want),
        Filter::Prefix(map) => attr(map, &|have, want| have.starts_with(want)),
        Filter::Suffix(map) => attr(map, &|have, want| have.ends_with(want)),
        Filter::All(list) => list.iter().all(|f| matches(f, event)),
        Filter::Any(list) => list.iter().any(|f| matches(f, event)),
        Filter::Not(inner) => !matches(inner, event),
    }
}

/// Whether `event` matches every filter of a trigger (an empty list matches every event).
pub fn matches_all(filters: &[Filter], event: &CloudEvent) -> bool {
    filters.iter().all(|f| matches(f, event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use switchyard_schemas::ExtensionValue;

    fn map(k: &str, v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(k.to_owned(), v.to_owned())])
    }

    fn event() -> CloudEvent {
        let mut e = CloudEvent::new("1", "/shop/eu", "com.example.order.created");
        e.subject = Some("orders/42.json".to_owned());
        e.extensions.insert("tenant".to_owned(), ExtensionValue::String("acme".to_owned()));
        e.extensions.insert("priority".to_owned(), ExtensionValue::Integer(5));
        e
    }

    #[test]
    fn exact_prefix_suffix_on_core_attributes() {
        let e = event();
        assert!(matches(&Filter::Exact(map("type", "com.example.order.created")), &e));
        assert!(!matches(&Filter::Exact(map("type", "com.example.order")), &e));
        assert!(matches(&Filter::Prefix(map("type", "com.example.")), &e));
        assert!(matches(&Filter::Suffix(map("subject", ".json")), &e));
        assert!(!matches(&Filter::Suffix(map("subject", ".xml")), &e));
        assert!(matches(&Filter::Exact(map("specversion", "1.0")), &e));
        assert!(matches(&Filter::Prefix(map("source", "/shop")), &e));
    }

    #[test]
    fn extensions_match_by_string_form() {
        let e = event();
        assert!(matches(&Filter::Exact(map("tenant", "acme")), &e));
        assert!(matches(&Filter::Exact(map("priority", "5")), &e));
        assert!(!matches(&Filter::Exact(map("tenant", "ACME")), &e), "exact is case-sensitive");
    }

    #[test]
    fn missing_attribute_never_matches_but_not_inverts() {
        let e = event();
        assert!(!matches(&Filter::Exact(map("region", "eu")), &e));
        assert!(!matches(&Filter::Prefix(map("dataschema", "")), &e));
        assert!(matches(&Filter::Not(Box::new(Filter::Exact(map("region", "eu")))), &e));
    }

    #[test]
    fn all_any_not_compose() {
        let e = event();
        let yes = Filter::Exact(map("tenant", "acme"));
        let no = Filter::Exact(map("tenant", "other"));
        assert!(matches(&Filter::All(vec![yes.clone(), Filter::Prefix(map("type", "com."))]), &e));
        assert!(!matches(&Filter::All(vec![yes.clone(), no.clone()]), &e));
        assert!(matches(&Filter::Any(vec![no.clone(), yes.clone()]), &e));
        assert!(!matches(&Filter::Any(vec![no.clone()]), &e));
        assert!(matches(&Filter::Not(Box::new(no)), &e));
        assert!(matches_all(&[], &e));
        assert!(!matches_all(&[yes, Filter::Exact(map("type", "x"))], &e));
    }
}
