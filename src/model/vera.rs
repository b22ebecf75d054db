//! VeRA's tensors in AdapterHub's and PEFT's files. Both hold the frozen random matrices once per
//! adapter (torch layouts `A` `[r, d_input]`, `B` `[d_output, r]`) and each module's vectors:
//! AdapterHub as the diagonal matrices `loras.<name>.vera_D` / `vera_B` with the matrices under
//! `shared_parameters.<name>.lora_A` / `lora_B`, PEFT as `<module>.vera_lambda_d` / `_b` with the
//! matrices as `base_model.vera_A` / `vera_B`. Modules hold their slices of the matrices; reading
//! cuts each module's slice from the file's matrices into the module's own keys, so the modules
//! fill as LoRA modules do.

use std::borrow::Cow;

use super::AdapterHost;
use crate::error::{Error, Result};
use crate::io::WeightsFile;
use crate::io::keys::ReferenceName;
use crate::io::tensors::{HostTensor, TensorMap};
use crate::methods::LoRA;

/// Where one format keeps VeRA's tensors.
pub(crate) struct VeraLayout {
    /// The keys of the shared `A` and `B`.
    pub shared: [String; 2],
    /// The names, under a module's prefix, its slices of `A` and `B` are filled from.
    pub slices: [&'static str; 2],
    /// The names of `d` and `b` under a module's prefix, when the file holds them as diagonal
    /// matrices (AdapterHub).
    pub diagonals: Option<[&'static str; 2]>,
}

impl VeraLayout {
    /// AdapterHub's, for adapter `name` on `model`.
    pub(crate) fn adapterhub<M: AdapterHost>(model: &M, name: &str) -> Self {
        let shared = |matrix: &str| format!("{}.{name}.{matrix}", model.shared_parameters_path());
        Self {
            shared: [shared("lora_A"), shared("lora_B")],
            slices: ["lora_A", "lora_B"],
            diagonals: Some(["vera_D", "vera_B"]),
        }
    }

    /// PEFT's (keys without the `base_model.model.` of module paths).
    pub(crate) fn peft() -> Self {
        Self {
            shared: ["base_model.vera_A".into(), "base_model.vera_B".into()],
            slices: ["lora_A.weight", "lora_B.weight"],
            diagonals: None,
        }
    }
}

/// The VeRA modules among `modules` (one per linear site, in site order): their tensor
/// prefixes (`prefix(site)`) and layer dims `[d_input, d_output]`.
pub(crate) fn vera_sites<'m, M: AdapterHost>(
    model: &M,
    modules: impl IntoIterator<Item = Option<&'m LoRA>>,
    prefix: impl Fn(&crate::sites::LinearSite) -> String,
) -> Vec<(String, [usize; 2])> {
    modules
        .into_iter()
        .zip(model.linear_sites())
        .filter(|(lora, _)| lora.is_some_and(|l| l.vera.is_some()))
        .map(|(_, site)| {
            let (d_input, d_output) = site.dims();
            (prefix(site), [d_input, d_output])
        })
        .collect()
}

/// `naming` for `module`, with a VeRA module's slices of the shared matrices written nowhere
/// (the shared matrices are written once, by [`write_vera`]).
pub(crate) fn vera_aware<'n>(
    module: &LoRA,
    naming: impl Fn(&str) -> Option<ReferenceName> + 'n,
) -> impl Fn(&str) -> Option<ReferenceName> + 'n {
    let vera = module.vera.is_some();
    move |path: &str| match path {
        "lora_a" | "lora_b" if vera => Some(ReferenceName::nowhere()),
        _ => naming(path),
    }
}

/// The installed VeRA modules of adapter `name`.
fn installed<'m, M: AdapterHost>(model: &'m M, name: &str) -> Vec<&'m LoRA> {
    model
        .linear_sites()
        .filter_map(|site| site.loras().get(name).filter(|l| l.vera.is_some()))
        .collect()
}

/// Fails unless every VeRA module of adapter `name` wraps a layer of one shape: AdapterHub
/// draws one `A` and `B` for the first layer's shape and uses them whole.
pub(crate) fn check_one_shape<M: AdapterHost>(model: &M, name: &str) -> Result<()> {
    let modules = vera_sites(
        model,
        model.linear_sites().map(|s| s.loras().get(name)),
        |site| {
            crate::io::keys::wrapped_module(&model.linear_site_path(site.location())).to_string()
        },
    );
    let Some((first, dims)) = modules.first() else {
        return Ok(());
    };
    match modules.iter().find(|(_, d)| d != dims) {
        Some((other, d)) => Err(Error::Unsupported(format!(
            "saving VeRA adapter `{name}` in AdapterHub's format: AdapterHub's shared matrices \
             serve layers of one shape, and `{first}` is {dims:?} (in, out) but `{other}` is \
             {d:?}; save it with save_peft_adapter"
        ))),
        None => Ok(()),
    }
}

/// Writes adapter `name`'s shared matrices into `tensors` as `layout` keeps them, and turns the
/// vectors collected under `prefixes` into diagonal matrices where the layout wants them. `A`
/// comes from the module with the most inputs, `B` from the one with the most outputs: together
/// they are the adapter's whole draw.
pub(crate) fn write_vera<M: AdapterHost>(
    model: &M,
    name: &str,
    layout: &VeraLayout,
    prefixes: &[String],
    tensors: &mut TensorMap,
) {
    if let Some(diagonals) = layout.diagonals {
        for prefix in prefixes {
            for vector in diagonals {
                let key = format!("{prefix}.{vector}");
                if let Some(v) = tensors.get(&key) {
                    let diagonal = diagonal_matrix(v);
                    tensors.insert(key, diagonal);
                }
            }
        }
    }
    let modules = installed(model, name);
    // A is [d_input, r] here, B [r, d_output]: dimension i is the one that grows.
    let widest = |i: usize| {
        modules
            .iter()
            .map(|l| {
                [&l.lora_a, &l.lora_b][i]
                    .as_ref()
                    .expect("VeRA modules hold A and B")
            })
            .max_by_key(|p| p.val().dims()[i])
    };
    for (i, key) in layout.shared.iter().enumerate() {
        let Some(param) = widest(i) else { return };
        let data = param.val().into_data().convert::<f32>();
        let tensor = HostTensor {
            shape: data.shape().to_vec(),
            values: data.try_to_vec::<f32>().expect("converted to f32"),
        };
        tensors.insert(key.clone(), tensor.transposed());
    }
}

/// The file with the VeRA tensors of the modules at `sites` (prefix, dims) in the modules'
/// layout: vectors read off the diagonals where `layout` has matrices (which must hold nothing
/// else), and each module's slices of `A` and `B` cut from the shared matrices under its prefix.
/// Without VeRA modules the file is returned as it is.
pub(crate) fn read_vera<'f>(
    file: &'f WeightsFile,
    layout: &VeraLayout,
    sites: &[(String, [usize; 2])],
) -> Result<Cow<'f, WeightsFile>> {
    if sites.is_empty() {
        return Ok(Cow::Borrowed(file));
    }
    let mut tensors = file.tensors.clone();
    let mut shared = Vec::new();
    for key in &layout.shared {
        let tensor = tensors.remove(key).ok_or_else(|| Error::MissingTensor {
            path: file.path.clone(),
            key: key.clone(),
        })?;
        shared.push((key, tensor));
    }
    for (prefix, [d_input, d_output]) in sites {
        for vector in layout.diagonals.into_iter().flatten() {
            let key = format!("{prefix}.{vector}");
            if let Some(matrix) = tensors.get(&key) {
                let diagonal = diagonal_of(matrix).map_err(|reason| {
                    Error::format(&file.path, format!("tensor `{key}` {reason}"))
                })?;
                tensors.insert(key, diagonal);
            }
        }
        let rows = |t: &HostTensor, key: &str, n: usize| {
            leading_rows(t, n).ok_or_else(|| {
                Error::format(
                    &file.path,
                    format!(
                        "tensor `{key}` {:?} is too small for `{prefix}` ({d_input} inputs, \
                         {d_output} outputs)",
                        t.shape
                    ),
                )
            })
        };
        let ((a_key, a), (b_key, b)) = (&shared[0], &shared[1]);
        // A is [r, d_input] (its first columns serve), B [d_output, r] (its first rows).
        let a = rows(&a.transposed(), a_key, *d_input)?.transposed();
        let b = rows(b, b_key, *d_output)?;
        tensors.insert(format!("{prefix}.{}", layout.slices[0]), a);
        tensors.insert(format!("{prefix}.{}", layout.slices[1]), b);
    }
    Ok(Cow::Owned(WeightsFile {
        path: file.path.clone(),
        tensors,
    }))
}

/// The first `n` rows of a matrix.
fn leading_rows(t: &HostTensor, n: usize) -> Option<HostTensor> {
    let [rows, cols] = <[usize; 2]>::try_from(t.shape.as_slice()).ok()?;
    (n <= rows).then(|| HostTensor {
        shape: vec![n, cols],
        values: t.values[..n * cols].to_vec(),
    })
}

/// `diag(v)`.
fn diagonal_matrix(v: &HostTensor) -> HostTensor {
    let n = v.values.len();
    let mut values = vec![0.0; n * n];
    for (i, x) in v.values.iter().enumerate() {
        values[i * n + i] = *x;
    }
    HostTensor {
        shape: vec![n, n],
        values,
    }
}

/// The diagonal of a square matrix that holds nothing else.
fn diagonal_of(m: &HostTensor) -> std::result::Result<HostTensor, String> {
    let [rows, cols] = <[usize; 2]>::try_from(m.shape.as_slice())
        .map_err(|_| format!("has shape {:?}, not a square matrix", m.shape))?;
    if rows != cols {
        return Err(format!("has shape {:?}, not a square matrix", m.shape));
    }
    let off = (0..rows * cols).find(|&k| k / cols != k % cols && m.values[k] != 0.0);
    if let Some(k) = off {
        return Err(format!(
            "holds {} off its diagonal at ({}, {}): VeRA trains a vector, the diagonal (adapters \
             1.3.0 trains the whole matrix, which is not VeRA)",
            m.values[k],
            k / cols,
            k % cols
        ));
    }
    Ok(HostTensor {
        shape: vec![rows],
        values: (0..rows).map(|i| m.values[i * cols + i]).collect(),
    })
}
