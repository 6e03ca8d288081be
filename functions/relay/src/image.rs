//! Stream images as items: `aws_lambda_events` hands over NewImage as
//! `serde_dynamo` attribute values; the item codec of
//! [`crm_aws::dynamodb::items`] reads the SDK's. One codec reads both the
//! table and its stream.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use crm_aws::dynamodb::items::Item;

/// A stream image as an SDK item.
pub fn to_item(image: &serde_dynamo::Item) -> Item {
    image
        .inner()
        .iter()
        .map(|(name, value)| (name.clone(), to_attribute(value)))
        .collect()
}

/// One attribute value, converted variant by variant.
pub fn to_attribute(value: &serde_dynamo::AttributeValue) -> AttributeValue {
    use serde_dynamo::AttributeValue as V;
    match value {
        V::S(s) => AttributeValue::S(s.clone()),
        V::N(n) => AttributeValue::N(n.clone()),
        V::Bool(b) => AttributeValue::Bool(*b),
        V::Null(b) => AttributeValue::Null(*b),
        V::B(b) => AttributeValue::B(Blob::new(b.clone())),
        V::Ss(v) => AttributeValue::Ss(v.clone()),
        V::Ns(v) => AttributeValue::Ns(v.clone()),
        V::Bs(v) => AttributeValue::Bs(v.iter().map(|b| Blob::new(b.clone())).collect()),
        V::L(v) => AttributeValue::L(v.iter().map(to_attribute).collect()),
        V::M(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), to_attribute(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_value_converts() {
        let image: serde_dynamo::Item = serde_json::from_value(serde_json::json!({
            "s": {"S": "x"},
            "n": {"N": "1.5"},
            "t": {"BOOL": true},
            "z": {"NULL": true},
            "b": {"B": "aGk="},
            "ss": {"SS": ["a", "b"]},
            "ns": {"NS": ["1"]},
            "bs": {"BS": ["aGk="]},
            "l": {"L": [{"S": "y"}, {"N": "2"}]},
            "m": {"M": {"k": {"S": "v"}}}
        }))
        .expect("image");
        let item = to_item(&image);
        assert_eq!(item.get("s"), Some(&AttributeValue::S("x".into())));
        assert_eq!(item.get("n"), Some(&AttributeValue::N("1.5".into())));
        assert_eq!(item.get("t"), Some(&AttributeValue::Bool(true)));
        assert_eq!(item.get("z"), Some(&AttributeValue::Null(true)));
        assert_eq!(item.get("b"), Some(&AttributeValue::B(Blob::new("hi"))));
        assert_eq!(item.get("ss"), Some(&AttributeValue::Ss(vec!["a".into(), "b".into()])));
        assert_eq!(item.get("ns"), Some(&AttributeValue::Ns(vec!["1".into()])));
        assert_eq!(item.get("bs"), Some(&AttributeValue::Bs(vec![Blob::new("hi")])));
        assert_eq!(
            item.get("l"),
            Some(&AttributeValue::L(vec![
                AttributeValue::S("y".into()),
                AttributeValue::N("2".into())
            ]))
        );
        assert_eq!(
            item.get("m"),
            Some(&AttributeValue::M(
                [("k".to_string(), AttributeValue::S("v".into()))].into()
            ))
        );
    }
}
