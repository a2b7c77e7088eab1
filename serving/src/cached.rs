//! The lazy reader of values in the cached-list shape (`recs:{user}`,
//! `similar:{item}`: `schemas::RecsList`), made for the request path: ids are
//! borrowed from the Redis reply and reading stops once `k` items passed the
//! caller's filter.

use std::cell::Cell;

use schemas::{ModelVersion, RecsList};

/// A cached list read lazily: ids are borrowed from the reply (no string per
/// item), and once `k` items passed the filter the rest of the list is not
/// read at all when the list is in the writers' canonical form (`model`
/// before `items`, ending in `}]}`: a value cut short fails that check and
/// gets the strict reading); otherwise the rest is skipped over and checked.
/// A list whose ids need JSON unescaping (no valid id does) goes through the
/// strict [`RecsList`] parser and is refused.
#[derive(Debug)]
pub struct CachedList<'a> {
    /// The model version the list was computed with.
    pub model: ModelVersion,
    /// The first `k` items the filter kept, best first.
    pub items: Vec<BorrowedItem<'a>>,
}

/// One entry of a [`CachedList`], its id borrowed from the reply.
#[derive(Debug, serde::Deserialize)]
pub struct BorrowedItem<'a> {
    #[serde(borrow)]
    pub item_id: &'a str,
    pub score: f32,
}

/// What a reading stopped early (by an error, serde's only way out of a
/// visitor) had found by then.
#[derive(Default)]
struct Found<'a> {
    model: Cell<Option<&'a str>>,
    items: Cell<Option<Vec<BorrowedItem<'a>>>>,
}

/// The message of the deliberate stop; never shown (see [`CachedList::parse`]).
const ENOUGH: &str = "k items found";

/// The first `k` items of the list that `keep` accepts.
struct ItemsSeed<'f, 'a> {
    k: usize,
    keep: &'f dyn Fn(&str) -> bool,
    /// `Some`: stop once `k` items are found and leave them here.
    stop: Option<&'f Found<'a>>,
}

impl<'a> serde::de::DeserializeSeed<'a> for ItemsSeed<'_, 'a> {
    type Value = Vec<BorrowedItem<'a>>;
    fn deserialize<D: serde::Deserializer<'a>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'a> serde::de::Visitor<'a> for ItemsSeed<'_, 'a> {
    type Value = Vec<BorrowedItem<'a>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of {item_id, score}")
    }
    fn visit_seq<A: serde::de::SeqAccess<'a>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(self.k);
        while out.len() < self.k {
            match seq.next_element::<BorrowedItem<'a>>()? {
                Some(it) if (self.keep)(it.item_id) => out.push(it),
                Some(_) => {}
                None => return Ok(out),
            }
        }
        if let Some(found) = self.stop {
            found.items.set(Some(out));
            return Err(serde::de::Error::custom(ENOUGH));
        }
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(out)
    }
}

/// The top-level object `{"model", "updated_ms", "items"}`.
struct ListVisitor<'f, 'a>(ItemsSeed<'f, 'a>);

impl<'a> serde::de::Visitor<'a> for ListVisitor<'_, 'a> {
    type Value = (Option<&'a str>, Option<Vec<BorrowedItem<'a>>>);
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a cached list")
    }
    fn visit_map<A: serde::de::MapAccess<'a>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut model, mut items) = (None, None);
        let mut seed = Some(self.0);
        while let Some(key) = map.next_key::<&'a str>()? {
            match (key, seed.take()) {
                ("model", s) => {
                    let m = map.next_value::<&'a str>()?;
                    if let Some(found) = s.as_ref().and_then(|s| s.stop) {
                        found.model.set(Some(m));
                    }
                    model = Some(m);
                    seed = s;
                }
                ("items", Some(s)) => items = Some(map.next_value_seed(s)?),
                (_, s) => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    seed = s;
                }
            }
        }
        Ok((model, items))
    }
}

impl<'a> CachedList<'a> {
    /// The first `k` items of `bytes` that `keep` accepts, and the list's model.
    pub fn parse(bytes: &'a [u8], k: usize, keep: &dyn Fn(&str) -> bool) -> Result<CachedList<'a>, String> {
        use serde::Deserializer;
        let found = Found::default();
        // Stopping early is safe only when what is not read is known to be
        // whole: the writer's form ends with the last item, the array and
        // the object; a value cut short anywhere does not.
        let canonical = bytes.trim_ascii_end().ends_with(b"}]}");
        let seed = ItemsSeed { k, keep, stop: canonical.then_some(&found) };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let parsed = de.deserialize_map(ListVisitor(seed)).and_then(|v| de.end().map(|()| v));
        let parsed = match (parsed, found.model.take(), found.items.take()) {
            // Stopped once k items were found, the model already read.
            (Err(_), Some(model), Some(items)) => Ok((Some(model), Some(items))),
            // Stopped before the model was read (not the writer's order):
            // read it all.
            (Err(_), None, Some(_)) => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                de.deserialize_map(ListVisitor(ItemsSeed { k, keep, stop: None })).and_then(|v| de.end().map(|()| v))
            }
            (parsed, _, _) => parsed,
        };
        match parsed {
            Ok((Some(model), Some(items))) => {
                Ok(CachedList { model: ModelVersion::parse(model).map_err(|e| e.to_string())?, items })
            }
            Ok(_) => Err("a cached list needs model and items".into()),
            // Escaped strings cannot be borrowed: the strict parser decides.
            Err(_) => RecsList::parse_json(bytes).map_err(|e| e.to_string()).and(Err("ids need unescaping".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(l: &CachedList<'_>) -> Vec<String> {
        l.items.iter().map(|i| i.item_id.to_owned()).collect()
    }

    #[test]
    fn cached_lists_are_read_lazily_and_filtered() {
        let json = br#"{"model":"v3","updated_ms":5,"items":[{"item_id":"a","score":3},{"item_id":"b","score":2},{"item_id":"c","score":1},{"item_id":"d","score":0.5}]}"#;
        let all = |_: &str| true;
        let l = CachedList::parse(json, 2, &all).unwrap();
        assert_eq!((l.model.as_str(), ids(&l)), ("v3", vec!["a".to_owned(), "b".to_owned()]));
        let no_b = |id: &str| id != "b";
        assert_eq!(ids(&CachedList::parse(json, 3, &no_b).unwrap()), ["a", "c", "d"]);
        assert_eq!(ids(&CachedList::parse(json, 10, &all).unwrap()).len(), 4, "short lists end early");
        // Field order does not matter; a broken tail or trailing bytes are refused.
        let reordered = br#"{"items":[{"score":1,"item_id":"x"}],"updated_ms":1,"model":"v1"}"#;
        assert_eq!(ids(&CachedList::parse(reordered, 5, &all).unwrap()), ["x"]);
        let model_last = br#"{"items":[{"item_id":"x","score":2},{"item_id":"y","score":1}],"model":"v2"}"#;
        let l = CachedList::parse(model_last, 1, &all).unwrap();
        assert_eq!((l.model.as_str(), ids(&l)), ("v2", vec!["x".to_owned()]), "stopped early, model read after");
        // The canonical form's tail is not read once k items are found...
        let canonical = br#"{"model":"v1","updated_ms":1,"items":[{"item_id":"a","score":1},{"bad":[}]}"#;
        assert_eq!(ids(&CachedList::parse(canonical, 1, &all).unwrap()), ["a"]);
        // ...but is when the head has fewer than k.
        assert!(CachedList::parse(canonical, 2, &all).is_err());
        assert!(CachedList::parse(br#"{"model":"v1","updated_ms":1,"items":[{"item_id":"a","score":1},{"#, 1, &all)
            .is_err());
        assert!(CachedList::parse(br#"{"model":"v1","updated_ms":1,"items":[]} x"#, 1, &all).is_err());
        assert!(CachedList::parse(br#"{"model":"v1","updated_ms":1}"#, 1, &all).is_err());
        assert!(CachedList::parse(br#"{"model":"../x","updated_ms":1,"items":[]}"#, 1, &all).is_err());
        assert!(CachedList::parse(
            br#"{"model":"v1","updated_ms":1,"items":[{"item_id":"\u0061","score":1}]}"#,
            1,
            &all
        )
        .is_err());
    }
}
