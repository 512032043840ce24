//! "Did you mean …?" for unknown keys and enum values: the closest candidate, when it is close enough.

/// The candidate closest to `input`, if it is plausibly what the user meant.
///
/// Comparison is case-insensitive (a key written `allowfrom` should point at `allowFrom`) and uses the
/// Damerau-Levenshtein distance so that swapped letters count once. A candidate is offered only when
/// the distance is at most a third of the longer word (at least 1): close enough to be a typo, far
/// enough that `port` does not suggest `host`.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let needle = input.to_lowercase();
    candidates
        .into_iter()
        .map(|candidate| {
            let distance = strsim::damerau_levenshtein(&needle, &candidate.to_lowercase());
            (distance, candidate)
        })
        .filter(|(distance, candidate)| {
            let longer = needle.chars().count().max(candidate.chars().count());
            *distance <= (longer / 3).max(1)
        })
        // `min_by_key` keeps the first of equals, so ties go to the earlier (documented) candidate.
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &[
        "dmPolicy",
        "allowFrom",
        "groupAllowFrom",
        "remoteHost",
        "host",
        "port",
        "includeAttachments",
        "strictHostKeyChecking",
    ];

    #[test]
    fn suggests_the_closest_key_only_when_it_looks_like_a_typo() {
        let cases = [
            ("dmPoliccy", Some("dmPolicy")),
            ("allowfrom", Some("allowFrom")),
            ("alowFrom", Some("allowFrom")),
            ("remotehost", Some("remoteHost")),
            ("includeAttachment", Some("includeAttachments")),
            ("strictHostKeyCheck", Some("strictHostKeyChecking")),
            ("hsot", Some("host")),
            ("prot", Some("port")),
            ("user", None),
            ("foo", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(closest(input, KEYS.iter().copied()), want, "{input}");
        }
    }

    #[test]
    fn suggests_enum_values_too() {
        let values = ["pairing", "allowlist", "open", "disabled"];
        assert_eq!(closest("opne", values), Some("open"));
        assert_eq!(closest("Allowlist", values), Some("allowlist"));
        assert_eq!(closest("closed", values), None);
    }
}
