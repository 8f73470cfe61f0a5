//! A backend wrapper that makes a chosen op fail, for tests of how the
//! serving engine contains failures. It passes everything else through to
//! the backend it wraps (any backend), and turns recording off so every op
//! goes through `execute` where the fault can strike.

use std::sync::Arc;
use std::sync::Mutex;

use crate::backend::{Backend, BackendExt};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::{Op, OpKind};
use crate::tensor::Tensor;

/// When the fault strikes.
#[derive(Clone, Debug)]
pub enum Trigger {
    /// On the n-th run of the op (counting from 1), once.
    Call(usize),
    /// On every run from the n-th on: a backend that breaks for good.
    From(usize),
    /// Every run of a `gather_rows` whose token ids hold this id: a request
    /// whose own data breaks a kernel, so it fails however it is batched.
    Token(u32),
}

/// What the fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// `execute` returns an error.
    Error,
    /// `execute` panics, as a bug in a kernel would.
    Panic,
    /// The device is lost: this op and every later one fail, and `lost`
    /// says so.
    LoseDevice,
}

#[derive(Clone, Debug)]
pub struct Fault {
    pub op: OpKind,
    pub trigger: Trigger,
    pub effect: Effect,
}

impl Fault {
    /// `OP:TRIGGER:EFFECT`, as in `gather_rows:token=450:error`,
    /// `add:from=200:error`, `matmul:call=30:panic` or
    /// `attention:call=9:lose-device` (`FERRUM_FAULT` for `ferrum serve`).
    pub fn parse(spec: &str) -> Result<Fault> {
        let bad = |why: &str| Error::Request(format!("fault {spec:?}: {why}; expected OP:TRIGGER:EFFECT"));
        let [op, trigger, effect] = spec.split(':').collect::<Vec<_>>()[..] else { return Err(bad("three parts")) };
        let op = OpKind::ALL.into_iter().find(|k| k.name() == op).ok_or_else(|| bad("unknown op"))?;
        let (what, n) = trigger.split_once('=').ok_or_else(|| bad("the trigger is WHAT=N"))?;
        let n: u64 = n.parse().map_err(|_| bad("the trigger's N is not a number"))?;
        let trigger = match what {
            "call" => Trigger::Call(n as usize),
            "from" => Trigger::From(n as usize),
            "token" => Trigger::Token(u32::try_from(n).map_err(|_| bad("the token id is too large"))?),
            _ => return Err(bad("the trigger is call=N, from=N or token=ID")),
        };
        let effect = match effect {
            "error" => Effect::Error,
            "panic" => Effect::Panic,
            "lose-device" => Effect::LoseDevice,
            _ => return Err(bad("the effect is error, panic or lose-device")),
        };
        Ok(Fault { op, trigger, effect })
    }
}

pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    fault: Fault,
    state: Mutex<FaultState>,
}

#[derive(Default)]
struct FaultState {
    calls: usize,
    struck: usize,
    lost: bool,
}

impl FaultyBackend {
    pub fn new(inner: Arc<dyn Backend>, fault: Fault) -> Self {
        FaultyBackend { inner, fault, state: Mutex::default() }
    }

    /// How many times the fault has struck.
    pub fn struck(&self) -> usize {
        self.state.lock().map_or(0, |s| s.struck)
    }

    fn strikes(&self, op: &Op, inputs: &[&Tensor]) -> Result<bool> {
        let mut state = self.state.lock().map_err(|_| Error::Backend("fault state poisoned".into()))?;
        if state.lost {
            return Ok(true);
        }
        if op.kind() != self.fault.op {
            return Ok(false);
        }
        state.calls += 1;
        let hit = match self.fault.trigger {
            Trigger::Call(n) => state.calls == n,
            Trigger::From(n) => state.calls >= n,
            Trigger::Token(id) => match (op, inputs.get(1)) {
                (Op::GatherRows(_), Some(ids)) => self.inner.read_u32(ids)?.contains(&id),
                _ => false,
            },
        };
        if hit {
            state.struck += 1;
            state.lost |= self.fault.effect == Effect::LoseDevice;
        }
        Ok(hit)
    }
}

impl Backend for FaultyBackend {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn device_description(&self) -> String {
        format!("{} with an injected fault", self.inner.device_description())
    }
    fn supports(&self, op: OpKind, dtype: DType) -> bool {
        self.inner.supports(op, dtype)
    }
    fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.inner.alloc(shape, dtype)
    }
    fn upload(&self, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        self.inner.upload(shape, dtype, bytes)
    }
    fn upload_quantized(&self, m: &crate::quant::QuantizedMatrix) -> Result<Tensor> {
        self.inner.upload_quantized(m)
    }
    fn write(&self, dst: &Tensor, bytes: &[u8]) -> Result<()> {
        self.inner.write(dst, bytes)
    }
    fn read(&self, src: &Tensor) -> Result<Vec<u8>> {
        self.inner.read(src)
    }
    fn execute(&self, op: &Op, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
        if self.strikes(op, inputs)? {
            let what = format!("injected fault in {:?}", op.kind());
            match self.fault.effect {
                Effect::Error => return Err(Error::Backend(what)),
                Effect::Panic => panic!("{what}"),
                Effect::LoseDevice => return Err(Error::Backend(format!("device lost ({what})"))),
            }
        }
        self.inner.execute(op, inputs, out)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
    fn memory_available(&self) -> Option<u64> {
        self.inner.memory_available()
    }

    fn lost(&self) -> Option<String> {
        let lost = self.state.lock().is_ok_and(|s| s.lost);
        if lost { Some("the device was lost (injected fault)".into()) } else { self.inner.lost() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse_and_bad_ones_say_why() {
        let f = Fault::parse("gather_rows:token=450:error").unwrap();
        assert_eq!((f.op, f.effect), (OpKind::GatherRows, Effect::Error));
        assert!(matches!(f.trigger, Trigger::Token(450)));
        assert!(matches!(Fault::parse("add:from=3:lose-device").unwrap().trigger, Trigger::From(3)));
        for (spec, why) in [
            ("matmul:call=1", "three parts"),
            ("conv:call=1:error", "unknown op"),
            ("matmul:when=1:error", "call=N"),
            ("matmul:call=x:error", "not a number"),
            ("matmul:call=1:explode", "the effect"),
        ] {
            let err = Fault::parse(spec).unwrap_err().to_string();
            assert!(err.contains(why), "{spec}: {err}");
        }
    }

    #[test]
    fn a_call_fault_strikes_once_and_a_lost_device_stays_lost() {
        let cpu: Arc<dyn Backend> = Arc::new(crate::CpuBackend::new());
        let add = |b: &FaultyBackend| {
            let (x, y) = (b.upload_f32(&[1, 1], &[1.0])?, b.upload_f32(&[1, 1], &[2.0])?);
            b.read_f32(&b.run(&Op::Add(crate::ops::Add), &[&x, &y])?)
        };
        let once = FaultyBackend::new(cpu.clone(), Fault::parse("add:call=2:error").unwrap());
        assert!(add(&once).is_ok() && add(&once).is_err() && add(&once).is_ok());
        assert_eq!((once.struck(), once.lost()), (1, None));
        let lost = FaultyBackend::new(cpu, Fault::parse("add:call=1:lose-device").unwrap());
        assert!(add(&lost).is_err() && add(&lost).is_err());
        assert!(lost.lost().is_some_and(|why| why.contains("lost")));
    }
}
