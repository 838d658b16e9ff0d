//! The fp32 graph's 3×3 and 5×5 convolutions for fc7's `fc7.Winograd` operator
//! (`infer::winograd`): each Conv on maps at least `MIN_MAP` wide with a 3×3 (5×5) kernel,
//! stride 1 and padding 1 (2) whose only reader is its ReLU becomes one node reading the filters
//! already transformed ([16 or 36, K, Cg]: G g Gᵀ,
//! computed here once in f64, so the optimised graph ONNX Runtime caches holds them). Other
//! graphs, and int8 graphs (whose convolutions read dequantised weights), are left as they are.

use super::graph::attr_int;
use super::proto::*;
use super::read::floats;
use super::{fused::DOMAIN, fused::WINOGRAD};
use crate::model::AlexNetConfig;
use crate::util::winograd::{transform_filters, KERNELS, MIN_MAP};

/// The names of `arch`'s convolutions whose maps are at least `MIN_MAP` wide.
pub fn wide_enough(arch: &AlexNetConfig) -> Vec<String> {
    let Ok(sizes) = arch.spatial() else {
        return Vec::new();
    };
    // [conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5]
    [0, 2, 4, 5, 6]
        .iter()
        .enumerate()
        .filter(|(_, &at)| sizes.get(at).is_some_and(|&s| s >= MIN_MAP))
        .map(|(i, _)| format!("conv{}", i + 1))
        .collect()
}

fn ints<'a>(n: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
    n.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.as_slice())
}

/// The filter side and group count of `n` when it is a plain r × r, stride-1, pad-r/2
/// convolution with r among `KERNELS`.
fn side_and_groups(n: &NodeProto) -> Option<(usize, i64)> {
    let r = match ints(n, "kernel_shape") {
        Some(&[a, b]) if a == b && KERNELS.contains(&(a as usize)) => a,
        _ => return None,
    };
    let p = r / 2;
    let plain = n.op_type == "Conv"
        && n.domain.is_empty()
        && n.input.len() == 3
        && ints(n, "strides").is_none_or(|s| s == [1, 1])
        && ints(n, "pads") == Some(&[p, p, p, p])
        && ints(n, "dilations").is_none_or(|d| d == [1, 1])
        && n.attribute.iter().all(|a| {
            ["kernel_shape", "strides", "pads", "dilations", "group"].contains(&a.name.as_str())
        });
    plain.then(|| {
        let groups = n.attribute.iter().find(|a| a.name == "group");
        (r as usize, groups.map_or(1, |a| a.i))
    })
}

/// Rewrites the Conv at node `at` and its ReLU into one `fc7.Winograd` node; false (and `g`
/// untouched) unless the pair and its filters are exactly what the operator computes.
fn rewrite_one(g: &mut GraphProto, at: usize, names: &[String]) -> bool {
    let conv = &g.node[at];
    let Some((r, groups)) = side_and_groups(conv).filter(|_| names.contains(&conv.name)) else {
        return false;
    };
    let out = &conv.output[0];
    let readers: Vec<usize> = (0..g.node.len())
        .filter(|&i| g.node[i].input.contains(out))
        .collect();
    let relu = match readers.as_slice() {
        [r] if *r > at && g.node[*r].op_type == "Relu" && g.node[*r].domain.is_empty() => *r,
        _ => return false,
    };
    let w_name = conv.input[1].clone();
    let w_readers = g.node.iter().filter(|n| n.input.contains(&w_name)).count();
    let Some(wi) = g.initializer.iter().position(|t| t.name == w_name) else {
        return false;
    };
    let w = &g.initializer[wi];
    let (k, cg) = match w.dims.as_slice() {
        &[k, cg, a, b]
            if k > 0 && cg > 0 && groups > 0 && k % groups == 0 && [a, b] == [r as i64; 2] =>
        {
            (k as usize, cg as usize)
        }
        _ => return false,
    };
    let Some(values) = floats(w).filter(|v| v.len() == k * cg * r * r) else {
        return false;
    };
    if w_readers != 1 || g.output.iter().any(|o| &o.name == out) {
        return false;
    }
    let u_name = format!("{w_name}.winograd");
    let u = transform_filters(&values, k, cg, r);
    let e = (r + 1) * (r + 1);
    g.initializer[wi] = super::graph::f32_tensor(&u_name, &[e, k, cg], &u);
    let node = NodeProto {
        input: vec![conv.input[0].clone(), u_name, conv.input[2].clone()],
        output: g.node[relu].output.clone(),
        name: g.node[relu].name.clone(),
        op_type: WINOGRAD.into(),
        attribute: vec![attr_int("group", groups), attr_int("relu", 1)],
        domain: DOMAIN.into(),
    };
    g.node[at] = node;
    g.node.remove(relu);
    true
}

/// Rewrites the Conv + ReLU pairs of `g` whose convolutions are among `names` where they are
/// 3×3 or 5×5, stride 1, "same" padding; how many.
pub fn rewrite(g: &mut GraphProto, names: &[String]) -> usize {
    let mut done = 0;
    let mut at = 0;
    while at < g.node.len() {
        done += rewrite_one(g, at, names) as usize;
        at += 1;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, AlexNetConfig, Init};
    use prost::Message;

    fn small() -> GraphProto {
        let mut c = AlexNetConfig::paper(3, 2);
        c.input = 67;
        c.hidden = 16;
        let bytes = super::super::to_onnx_bytes(&c, &init_params(&c, Init::He, 5), "").unwrap();
        ModelProto::decode(bytes.as_slice()).unwrap().graph.unwrap()
    }

    fn all() -> Vec<String> {
        (1..=5).map(|n| format!("conv{n}")).collect()
    }

    #[test]
    fn only_maps_of_at_least_12_are_worth_it() {
        let paper = AlexNetConfig::paper(10, 2); // conv3..5 at 13 × 13
        assert_eq!(
            wide_enough(&paper),
            ["conv1", "conv2", "conv3", "conv4", "conv5"]
        );
        let mut quick = paper.clone();
        quick.input = 63; // conv2 at 7, conv3..5 at 3
        assert_eq!(wide_enough(&quick), ["conv1"]);
        let mut g = small(); // input 67: conv3..5 at 3 × 3
        let names = wide_enough(&AlexNetConfig { input: 67, ..paper });
        assert_eq!(rewrite(&mut g, &names), 0);
    }

    #[test]
    fn conv2_to_5_and_their_relus_become_one_node_each() {
        let mut g = small();
        let before = g.node.len();
        assert_eq!(rewrite(&mut g, &all()), 4);
        assert_eq!(g.node.len(), before - 4);
        let ours: Vec<&NodeProto> = g.node.iter().filter(|n| n.op_type == WINOGRAD).collect();
        let outputs: Vec<&str> = ours.iter().map(|n| n.output[0].as_str()).collect();
        assert_eq!(outputs, ["relu2", "relu3", "relu4", "relu5"]);
        let groups: Vec<i64> = ours.iter().map(|n| n.attribute[0].i).collect();
        assert_eq!(groups, [2, 1, 2, 2]);
        let u = g
            .initializer
            .iter()
            .find(|t| t.name == "conv4.w.winograd")
            .unwrap();
        assert_eq!(u.dims, [16, 384, 192]);
        assert!(!g.initializer.iter().any(|t| t.name == "conv4.w"));
        let u = g.initializer.iter().find(|t| t.name == "conv2.w.winograd");
        assert_eq!(u.unwrap().dims, [36, 256, 48]);
        // conv1 (11×11, stride 4) stays as it is
        let convs: Vec<&str> = g
            .node
            .iter()
            .filter(|n| n.op_type == "Conv" && n.name.starts_with("conv"))
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(convs, ["conv1"]);
    }

    #[test]
    fn int8_convolutions_are_left_alone() {
        use crate::model::onnx::qdq::{test_ranges, to_int8_onnx_bytes};
        let mut c = AlexNetConfig::paper(3, 2);
        c.hidden = 16;
        let p = init_params(&c, Init::He, 5);
        let bytes = to_int8_onnx_bytes(&c, &p, &test_ranges(&c), "").unwrap();
        let mut g = ModelProto::decode(bytes.as_slice()).unwrap().graph.unwrap();
        assert_eq!(rewrite(&mut g, &wide_enough(&c)), 0);
    }

    #[test]
    fn a_convolution_read_before_its_relu_or_shaped_otherwise_is_left_alone() {
        let mut g = small();
        let mut spy = g.node.iter().find(|n| n.name == "relu4").unwrap().clone();
        spy.output = vec!["spy".into()];
        g.node.push(spy);
        let conv5 = g.node.iter_mut().find(|n| n.name == "conv5").unwrap();
        conv5.attribute[1].ints = vec![2, 2]; // strides
        assert_eq!(rewrite(&mut g, &all()), 2); // conv2 and conv3
        assert!(g
            .node
            .iter()
            .any(|n| n.name == "conv4" && n.op_type == "Conv"));
        assert!(g
            .node
            .iter()
            .any(|n| n.name == "conv5" && n.op_type == "Conv"));
    }
}
