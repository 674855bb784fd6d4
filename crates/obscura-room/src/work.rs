//! A piece of clean-room work: the function (a WebAssembly module) and its manifest, named by
//! its Work-ID. The Work-ID is what the data owner approves, what a worker's evidence binds and
//! what every node and audit entry names, so everything that decides what the run may read,
//! compute and hand out is inside it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::RoomError;

/// Largest module taken (bytes, binary form).
pub const MAX_MODULE: usize = 4 << 20;
/// Most inputs of one work.
pub const MAX_INPUTS: usize = 64;
/// Most labels, and the longest label (bytes).
pub const MAX_LABELS: usize = 256;
/// The longest label (bytes).
pub const MAX_LABEL: usize = 128;
/// Largest parameters (bytes).
pub const MAX_PARAMETERS: usize = 64 << 10;
/// Largest output any manifest may allow (bytes).
pub const MAX_OUTPUT: u32 = 16 << 20;
/// Most fuel any manifest may give a run (about a few seconds of straight-line code).
pub const MAX_FUEL: u64 = 20_000_000_000;
/// Most linear memory any manifest may give a run (bytes).
pub const MAX_MEMORY: u64 = 1 << 30;
/// Most recipients of a result.
pub const MAX_RECIPIENTS: usize = 16;

const WORK_DOMAIN: &[u8] = b"obscura/room/work/v1";

/// The Work-ID: SHA-256 over the canonical encoding of the module and its manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkId(pub [u8; 32]);

impl WorkId {
    /// Lower-case hex, as every party is shown it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Display for WorkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What the function hands back, checked by the worker before it seals anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// A JSON document (UTF-8, parsed by the worker).
    Json,
    /// UTF-8 text.
    Text,
    /// An image: width and height (u32, little-endian) then RGB8 pixels, row by row; the worker
    /// checks the size and hands it out as PNG.
    Image,
}

impl OutputKind {
    /// Its number in encodings.
    pub fn tag(self) -> u8 {
        match self {
            OutputKind::Json => 1,
            OutputKind::Text => 2,
            OutputKind::Image => 3,
        }
    }

    /// The kind numbered `tag`.
    pub fn from_tag(tag: u8) -> Option<OutputKind> {
        match tag {
            1 => Some(OutputKind::Json),
            2 => Some(OutputKind::Text),
            3 => Some(OutputKind::Image),
            _ => None,
        }
    }
}

/// One input: a stored image, with the index of its label in [`Manifest::labels`], if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The image id (32 hex digits).
    #[serde(with = "hex16")]
    pub image: [u8; 16],
    /// Its label's index in the manifest's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<u16>,
}

/// The output the function may give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Its kind.
    pub kind: OutputKind,
    /// Its largest size in bytes, as the function writes it.
    pub max_bytes: u32,
}

/// How much a run may spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// WebAssembly fuel (about one unit per instruction; host copies are charged by size).
    pub fuel: u64,
    /// Linear memory (bytes).
    pub memory_bytes: u64,
}

/// The I/O manifest: which images the function reads, with which parameters, what it may hand
/// back, to whom, and what a run may spend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The images, in the order the function sees them (a work needs at least one; a
    /// manifest file may leave them to be filled in, by `obscura room work --matches`).
    #[serde(default)]
    pub inputs: Vec<InputSpec>,
    /// Labels the inputs may carry.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The function's parameters (hex).
    #[serde(default, with = "hexvec")]
    pub parameters: Vec<u8>,
    /// Its output.
    pub output: OutputSpec,
    /// What a run may spend.
    pub limits: Limits,
    /// Who receives the result: X25519 public keys (hex), each sealed a copy.
    #[serde(with = "hex32s")]
    pub recipients: Vec<[u8; 32]>,
}

/// A function and its manifest. The module is held in binary form: text is converted once, so
/// the Work-ID names exactly the bytes that run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work {
    module: Vec<u8>,
    manifest: Manifest,
}

impl Work {
    /// A piece of work, from a module in binary or text form and a manifest.
    ///
    /// # Errors
    ///
    /// [`RoomError::Module`] if the module is neither valid WebAssembly text nor binary, or too
    /// large; [`RoomError::Manifest`] if the manifest breaks a limit above or names a label
    /// that is not there.
    pub fn new(module: &[u8], manifest: Manifest) -> Result<Work, RoomError> {
        if module.len() > MAX_MODULE {
            return Err(RoomError::Module(format!(
                "{} bytes; a module is at most {MAX_MODULE}",
                module.len()
            )));
        }
        let module = wat::parse_bytes(module)
            .map_err(|e| RoomError::Module(e.to_string()))?
            .into_owned();
        if module.len() > MAX_MODULE {
            return Err(RoomError::Module(format!(
                "{} bytes once compiled from text; a module is at most {MAX_MODULE}",
                module.len()
            )));
        }
        manifest.check()?;
        Ok(Work { module, manifest })
    }

    /// The module, in binary form.
    pub fn module(&self) -> &[u8] {
        &self.module
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The Work-ID.
    pub fn id(&self) -> WorkId {
        WorkId(Sha256::digest(self.canonical()).into())
    }

    /// The canonical encoding the Work-ID hashes: every field in a fixed order, every
    /// variable-length field prefixed by its length, so no two works share an encoding.
    pub fn canonical(&self) -> Vec<u8> {
        let m = &self.manifest;
        let mut out = WORK_DOMAIN.to_vec();
        put_bytes(&mut out, &self.module);
        put_len(&mut out, m.inputs.len());
        for input in &m.inputs {
            out.extend_from_slice(&input.image);
            match input.label {
                Some(label) => {
                    out.push(1);
                    out.extend_from_slice(&label.to_be_bytes());
                }
                None => out.push(0),
            }
        }
        put_len(&mut out, m.labels.len());
        for label in &m.labels {
            put_bytes(&mut out, label.as_bytes());
        }
        put_bytes(&mut out, &m.parameters);
        out.push(m.output.kind.tag());
        out.extend_from_slice(&m.output.max_bytes.to_be_bytes());
        out.extend_from_slice(&m.limits.fuel.to_be_bytes());
        out.extend_from_slice(&m.limits.memory_bytes.to_be_bytes());
        put_len(&mut out, m.recipients.len());
        for r in &m.recipients {
            out.extend_from_slice(r);
        }
        out
    }
}

/// A work as a file: the module (binary, hex) and the manifest. What the controller uploads and
/// every party reads the Work-ID from.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkFile {
    #[serde(with = "hexvec")]
    module: Vec<u8>,
    manifest: Manifest,
}

impl Work {
    /// The work as a JSON file.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&WorkFile {
            module: self.module.clone(),
            manifest: self.manifest.clone(),
        })
        .expect("a work serialises")
    }

    /// A work from its JSON file, checked as [`Work::new`] checks it.
    ///
    /// # Errors
    /// [`RoomError::Manifest`] if it does not parse; as [`Work::new`].
    pub fn from_json(text: &[u8]) -> Result<Work, RoomError> {
        let file: WorkFile =
            serde_json::from_slice(text).map_err(|e| RoomError::Manifest(e.to_string()))?;
        Work::new(&file.module, file.manifest)
    }

    /// A work from its JSON file whose module is in binary form, as a worker takes it: text
    /// would have it parse WebAssembly text before it checks the approval.
    ///
    /// # Errors
    /// [`RoomError::Module`] for a module in text form; as [`Work::from_json`].
    pub fn from_json_binary(text: &[u8]) -> Result<Work, RoomError> {
        let file: WorkFile =
            serde_json::from_slice(text).map_err(|e| RoomError::Manifest(e.to_string()))?;
        if !file.module.starts_with(b"\0asm") {
            return Err(RoomError::Module(
                "a worker takes a module in binary form (`obscura room work` makes one)".into(),
            ));
        }
        Work::new(&file.module, file.manifest)
    }

    /// The input images, in order.
    pub fn images(&self) -> Vec<[u8; 16]> {
        self.manifest.inputs.iter().map(|i| i.image).collect()
    }
}

/// The data owner's approval of a work: what the nodes check before they release anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The Work-ID (hex).
    pub work: String,
    /// The attestation policy a worker must pass (JSON, as signed).
    pub policy: String,
    /// The end of the approval (Unix seconds).
    pub expires_at: u64,
    /// Most runs at each node.
    pub max_runs: u32,
    /// The owner's signature over `obscura_sharing::order::Order::Approve` (hex).
    pub signature: String,
}

impl Approval {
    /// The owner's approval of `work`, signed with `owner`.
    pub fn sign(
        work: &Work,
        policy: &str,
        expires_at: u64,
        max_runs: u32,
        owner: &ed25519_dalek::SigningKey,
    ) -> Approval {
        let signature =
            Approval::order(&work.id().0, &work.images(), policy, expires_at, max_runs).sign(owner);
        Approval {
            work: work.id().to_hex(),
            policy: policy.to_owned(),
            expires_at,
            max_runs,
            signature: hex::encode(signature),
        }
    }

    /// The order an approval signs.
    pub fn order(
        work: &[u8; 32],
        images: &[[u8; 16]],
        policy: &str,
        expires_at: u64,
        max_runs: u32,
    ) -> obscura_sharing::order::Order {
        obscura_sharing::order::Order::Approve {
            work: *work,
            inputs: obscura_proto::room_inputs_digest(images),
            policy: obscura_proto::room_policy_digest(policy.as_bytes()),
            expires_at,
            max_runs,
        }
    }

    /// Check that this approval is the owner's, for `work`.
    ///
    /// # Errors
    /// [`RoomError::Manifest`] saying what does not fit.
    pub fn check(
        &self,
        work: &Work,
        owner: &ed25519_dalek::VerifyingKey,
    ) -> Result<[u8; 64], RoomError> {
        if !self.work.eq_ignore_ascii_case(&work.id().to_hex()) {
            return Err(RoomError::Manifest(format!(
                "the approval is for work {}, not {}",
                self.work,
                work.id()
            )));
        }
        let mut signature = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut signature).map_err(|_| {
            RoomError::Manifest("the approval's signature is not 128 hex digits".into())
        })?;
        Approval::order(
            &work.id().0,
            &work.images(),
            &self.policy,
            self.expires_at,
            self.max_runs,
        )
        .verify(owner, &signature)
        .map_err(|_| RoomError::Manifest("the approval is not the data owner's".into()))?;
        Ok(signature)
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Every length is bounded far below 2^32 by the limits `Manifest::check` keeps.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

impl Manifest {
    /// # Errors
    ///
    /// [`RoomError::Manifest`] naming the first limit broken.
    pub fn check(&self) -> Result<(), RoomError> {
        let bad = |why: String| Err(RoomError::Manifest(why));
        if self.inputs.is_empty() || self.inputs.len() > MAX_INPUTS {
            return bad(format!(
                "1 to {MAX_INPUTS} inputs, not {}",
                self.inputs.len()
            ));
        }
        for (i, input) in self.inputs.iter().enumerate() {
            if self.inputs[..i].iter().any(|o| o.image == input.image) {
                return bad(format!("input {i} repeats an image"));
            }
            if let Some(label) = input.label {
                if usize::from(label) >= self.labels.len() {
                    return bad(format!("input {i} names label {label}, which is not there"));
                }
            }
        }
        if self.labels.len() > MAX_LABELS {
            return bad(format!("at most {MAX_LABELS} labels"));
        }
        if let Some(l) = self.labels.iter().find(|l| l.len() > MAX_LABEL) {
            return bad(format!(
                "a label is at most {MAX_LABEL} bytes; one has {}",
                l.len()
            ));
        }
        if self.parameters.len() > MAX_PARAMETERS {
            return bad(format!("parameters are at most {MAX_PARAMETERS} bytes"));
        }
        if self.output.max_bytes == 0 || self.output.max_bytes > MAX_OUTPUT {
            return bad(format!("an output's maximum is 1 to {MAX_OUTPUT} bytes"));
        }
        if self.limits.fuel == 0 || self.limits.fuel > MAX_FUEL {
            return bad(format!("fuel is 1 to {MAX_FUEL}"));
        }
        if self.limits.memory_bytes < 65536 || self.limits.memory_bytes > MAX_MEMORY {
            return bad(format!("memory is 64 KiB to {MAX_MEMORY} bytes"));
        }
        if self.recipients.is_empty() || self.recipients.len() > MAX_RECIPIENTS {
            return bad(format!("1 to {MAX_RECIPIENTS} recipients"));
        }
        // Each recipient gets its own sealed copy: the result holds them all.
        if u64::from(self.output.max_bytes) * self.recipients.len() as u64 > u64::from(MAX_OUTPUT) {
            return bad(format!(
                "the output's maximum times the recipients is at most {MAX_OUTPUT} bytes"
            ));
        }
        Ok(())
    }
}

mod hex16 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 16];
        hex::decode_to_slice(&text, &mut out)
            .map_err(|_| serde::de::Error::custom("an image id is 32 hex digits"))?;
        Ok(out)
    }
}

mod hexvec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(&text).map_err(|_| serde::de::Error::custom("parameters are hex"))
    }
}

mod hex32s {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(text, &mut out).map_err(|_| {
                    serde::de::Error::custom("a recipient is an X25519 key, 64 hex digits")
                })?;
                Ok(out)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            inputs: vec![
                InputSpec {
                    image: [1; 16],
                    label: Some(0),
                },
                InputSpec {
                    image: [2; 16],
                    label: None,
                },
            ],
            labels: vec!["cat".into()],
            parameters: vec![9, 9],
            output: OutputSpec {
                kind: OutputKind::Json,
                max_bytes: 4096,
            },
            limits: Limits {
                fuel: 1_000_000,
                memory_bytes: 1 << 20,
            },
            recipients: vec![[7; 32]],
        }
    }

    type Change = Box<dyn Fn(&mut Manifest)>;

    const MODULE: &str =
        r#"(module (memory (export "memory") 1) (func (export "run") (result i32) i32.const 0))"#;

    #[test]
    fn text_and_binary_forms_of_one_module_name_the_same_work() {
        let text = Work::new(MODULE.as_bytes(), manifest()).unwrap();
        let binary = Work::new(text.module(), manifest()).unwrap();
        assert_eq!(text.id(), binary.id());
    }

    #[test]
    fn every_field_of_the_manifest_changes_the_work_id() {
        let base = Work::new(MODULE.as_bytes(), manifest()).unwrap().id();
        let changes: Vec<Change> = vec![
            Box::new(|m| m.inputs[1].image[0] ^= 1),
            Box::new(|m| m.inputs[1].label = Some(0)),
            Box::new(|m| m.inputs.swap(0, 1)),
            Box::new(|m| m.labels[0].push('s')),
            Box::new(|m| m.parameters.push(0)),
            Box::new(|m| m.output.kind = OutputKind::Text),
            Box::new(|m| m.output.max_bytes += 1),
            Box::new(|m| m.limits.fuel += 1),
            Box::new(|m| m.limits.memory_bytes += 65536),
            Box::new(|m| m.recipients[0][31] ^= 1),
            Box::new(|m| m.recipients.push([8; 32])),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut m = manifest();
            change(&mut m);
            let id = Work::new(MODULE.as_bytes(), m).unwrap().id();
            assert_ne!(id, base, "change {i} kept the Work-ID");
        }
        let other = MODULE.replace("i32.const 0", "i32.const 1");
        assert_ne!(Work::new(other.as_bytes(), manifest()).unwrap().id(), base);
    }

    #[test]
    fn a_manifest_past_a_limit_is_refused_with_the_reason() {
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|m| m.inputs.clear()), "inputs"),
            (Box::new(|m| m.inputs[1].image = [1; 16]), "repeats"),
            (Box::new(|m| m.inputs[1].label = Some(3)), "label 3"),
            (Box::new(|m| m.output.max_bytes = MAX_OUTPUT + 1), "output"),
            (Box::new(|m| m.limits.fuel = 0), "fuel"),
            (
                Box::new(|m| m.limits.memory_bytes = MAX_MEMORY + 1),
                "memory",
            ),
            (Box::new(|m| m.recipients.clear()), "recipients"),
        ];
        for (change, said) in cases {
            let mut m = manifest();
            change(&mut m);
            let e = Work::new(MODULE.as_bytes(), m).unwrap_err().to_string();
            assert!(e.contains(said), "{e}");
        }
        assert!(matches!(
            Work::new(b"(module (func", manifest()),
            Err(RoomError::Module(_))
        ));
    }

    #[test]
    fn a_manifest_reads_back_from_its_json() {
        let m = manifest();
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
        assert!(
            serde_json::from_str::<Manifest>(&text.replace("\"inputs\"", "\"input\"")).is_err()
        );
    }
}
