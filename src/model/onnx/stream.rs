//! A model's protobuf written piece by piece: each parameter goes from the caller's slice to the
//! file without first becoming a tensor's `raw_data` and then part of one encoded message (the
//! paper network's 244 MB were held three times over, and `fc7 model init` spent 2 of its 2.7 s
//! in the kernel giving it fresh pages). The bytes are prost's own encoding of the whole
//! message, field for field: every field of these messages is written in tag order, and
//! `raw_data` is a tensor's last.

use std::borrow::Cow;
use std::io::{self, Write};

use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;

use super::proto::{GraphProto, ModelProto};

/// `ModelProto.graph`, `GraphProto.initializer` and `TensorProto.raw_data`'s field numbers.
const GRAPH: u32 = 7;
const INITIALIZER: u32 = 5;
const RAW_DATA: u32 = 9;

/// A model whose first `raws.len()` initializers have their `raw_data` apart, in `raws` (left
/// empty in the message).
pub struct Encoded<'a> {
    pub model: ModelProto,
    pub raws: Vec<Cow<'a, [u8]>>,
}

impl Encoded<'_> {
    /// Writes what `encode_to_vec` of the model with its raw data in place would give.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        let m = &self.model;
        let graph = m.graph.as_ref().expect("a model has a graph");
        let head = ModelProto {
            ir_version: m.ir_version,
            producer_name: m.producer_name.clone(),
            producer_version: m.producer_version.clone(),
            doc_string: m.doc_string.clone(),
            ..Default::default()
        };
        let tail = ModelProto {
            opset_import: m.opset_import.clone(),
            metadata_props: m.metadata_props.clone(),
            ..Default::default()
        };
        let graph_head = GraphProto {
            node: graph.node.clone(),
            name: graph.name.clone(),
            ..Default::default()
        };
        let graph_tail = GraphProto {
            input: graph.input.clone(),
            output: graph.output.clone(),
            ..Default::default()
        };
        let (graph_head, graph_tail) = (graph_head.encode_to_vec(), graph_tail.encode_to_vec());
        let initializers: Vec<(Vec<u8>, &[u8])> = (graph.initializer.iter().enumerate())
            .map(|(j, t)| {
                let raw = self.raws.get(j).map_or(&[][..], |r| &r[..]);
                assert!(raw.is_empty() || t.raw_data.is_empty(), "raw data twice");
                let mut fields = t.encode_to_vec();
                // prost leaves an empty field out, and so does this.
                if !raw.is_empty() {
                    delimited(RAW_DATA, raw.len(), &mut fields);
                }
                let mut framed = Vec::with_capacity(fields.len() + 12);
                delimited(INITIALIZER, fields.len() + raw.len(), &mut framed);
                framed.extend(fields);
                (framed, raw)
            })
            .collect();
        let graph_len = graph_head.len()
            + (initializers.iter())
                .map(|(h, r)| h.len() + r.len())
                .sum::<usize>()
            + graph_tail.len();
        let mut key = head.encode_to_vec();
        delimited(GRAPH, graph_len, &mut key);
        out.write_all(&key)?;
        out.write_all(&graph_head)?;
        for (framed, raw) in &initializers {
            out.write_all(framed)?;
            out.write_all(raw)?;
        }
        out.write_all(&graph_tail)?;
        out.write_all(&tail.encode_to_vec())
    }

    /// The whole encoding in memory (one copy of the raw data).
    pub fn to_vec(&self) -> Vec<u8> {
        let raw: usize = self.raws.iter().map(|r| r.len()).sum();
        let mut v = Vec::with_capacity(raw + (1 << 16));
        self.write_to(&mut v).expect("writing to memory");
        v
    }
}

/// A length-delimited field's key and length.
fn delimited(field: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx::graph::tensor;
    use crate::model::onnx::proto::{
        NodeProto, OperatorSetIdProto, StringStringEntryProto, ValueInfoProto, FLOAT,
    };

    /// prost's encoding of the message with the raw data in place is the reference: raw data of
    /// lengths that take one, two and three bytes of varint, an empty one, a tensor whose data
    /// is in the message (a constant), a node, the graph's input and output, and every field of
    /// the model set.
    #[test]
    fn the_pieces_are_prosts_encoding_of_the_whole() {
        let raws: Vec<Vec<u8>> = [3usize, 200, 20_000, 0]
            .iter()
            .map(|&n| (0..n).map(|j| (j * 7 % 251) as u8).collect())
            .collect();
        let named = |j: usize, raw: Vec<u8>| tensor(&format!("t{j}"), &[raw.len(), 1], FLOAT, raw);
        let mut initializer: Vec<_> = (0..raws.len()).map(|j| named(j, Vec::new())).collect();
        initializer.push(named(9, vec![1, 2, 3, 4]));
        let model = |initializer| ModelProto {
            ir_version: 8,
            producer_name: "fc7".into(),
            producer_version: "0.1.0".into(),
            doc_string: "doc".into(),
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    input: vec!["x".into(), "t0".into()],
                    output: vec!["y".into()],
                    op_type: "Mul".into(),
                    ..Default::default()
                }],
                name: "g".into(),
                initializer,
                input: vec![ValueInfoProto {
                    name: "x".into(),
                    r#type: None,
                }],
                output: vec![ValueInfoProto {
                    name: "y".into(),
                    r#type: None,
                }],
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            metadata_props: vec![StringStringEntryProto {
                key: "k".into(),
                value: "v".into(),
            }],
        };
        let mut whole = initializer.clone();
        for (t, r) in whole.iter_mut().zip(&raws) {
            t.raw_data = r.clone();
        }
        let want = model(whole).encode_to_vec();
        let pieces = Encoded {
            model: model(initializer),
            raws: raws.iter().map(|r| Cow::Borrowed(&r[..])).collect(),
        };
        assert!(pieces.to_vec() == want, "the streamed bytes");
        let back = ModelProto::decode(&want[..]).unwrap();
        assert_eq!(back.graph.unwrap().initializer[2].raw_data, raws[2]);
    }
}
