//! Checkpoints of adapter training on burn-train's `Learner` (feature `train`) that hold only
//! what training changes: the adapter and its head in AdapterHub's files, the optimiser's
//! moments and the scheduler's state in burn-train's files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::OptimizerRecord;
use burn::optim::lr_scheduler::LrSchedulerRecord;
use burn::store::ModuleRecord;
use burn::tensor::Tensor;
use burn::train::SupervisedTraining;
use burn::train::checkpoint::{Checkpoint, Checkpointer, CheckpointerError, FileCheckpointer};

use crate::error::{Error, Result};
use crate::io::adapterhub::saved_adapter_name;
use crate::train::learner::{AdapterClassifier, Classify};

/// burn-train's model checkpointer for an [`AdapterClassifier`] whose head has its adapter's
/// name: epoch `n` is the directory `adapter-n` with the adapter and head as
/// [`save_adapter`](crate::AdapterModel::save_adapter) writes them (AdapterHub's files), beside
/// burn-train's `optim-n.bpk` and `scheduler-n.bpk`; the frozen base is never written.
///
/// ```no_run
/// # use burn_adapters::models::bert::BertModel;
/// # use burn_adapters::train::checkpoint::AdapterCheckpointer;
/// # use burn_adapters::train::learner::{AdapterClassifier, ClassificationBatch};
/// # use burn_adapters::models::bert::BertInput;
/// # use burn::train::SupervisedTraining;
/// # fn example(
/// #     classifier: AdapterClassifier<BertModel>,
/// #     training: SupervisedTraining<AdapterClassifier<BertModel>>,
/// # ) -> burn_adapters::Result<()> {
/// // Checkpoint every epoch; to resume, pass the epoch to continue after instead of `None`.
/// let checkpoints = AdapterCheckpointer::new(&classifier, "runs/sentiment/checkpoint")?;
/// let training = checkpoints.install(training, None)?;
/// # let _ = training;
/// # Ok(())
/// # }
/// ```
pub struct AdapterCheckpointer<M: Classify> {
    directory: PathBuf,
    template: Mutex<AdapterClassifier<M>>,
    ids: BTreeMap<String, ParamId>,
}

impl<M: Classify> AdapterCheckpointer<M> {
    /// Checkpoints of `classifier` (the one given to the `Learner`: the optimiser's state is
    /// keyed by its parameters' ids) in `directory`. Its head must have the name of one of its
    /// adapters, as AdapterHub saves a head with its adapter.
    pub fn new(classifier: &AdapterClassifier<M>, directory: impl AsRef<Path>) -> Result<Self> {
        let adapter = classifier.head();
        if !classifier.model().has_adapter(adapter) {
            return Err(Error::InvalidSetup(format!(
                "checkpoints save the head with its adapter, and there is no adapter `{adapter}`"
            )));
        }
        let mut ids = IdsByPath::default();
        classifier.visit(&mut ids);
        Ok(Self {
            directory: directory.as_ref().to_path_buf(),
            template: Mutex::new(classifier.clone()),
            ids: ids.ids,
        })
    }

    /// The directory of epoch `epoch`'s adapter and head.
    pub fn adapter_dir(&self, epoch: usize) -> PathBuf {
        self.directory.join(format!("adapter-{epoch}"))
    }

    /// Registers this checkpointer and burn-train's optimiser and scheduler checkpointers (in
    /// the same directory) with `training`. With `resume_from: Some(epoch)`, first checks that
    /// epoch's three checkpoints (an error names a missing, corrupt or foreign one, and nothing
    /// changes), then has burn-train restore them and continue with the next epoch.
    pub fn install(
        self,
        training: SupervisedTraining<AdapterClassifier<M>>,
        resume_from: Option<usize>,
    ) -> Result<SupervisedTraining<AdapterClassifier<M>>> {
        let optimizer = FileCheckpointer::new(&self.directory, "optim");
        let scheduler = FileCheckpointer::new(&self.directory, "scheduler");
        if let Some(epoch) = resume_from {
            self.check_resume(epoch)?;
        }
        let training = training.with_custom_checkpointers(self, optimizer, scheduler);
        Ok(match resume_from {
            Some(epoch) => training.checkpoint(epoch),
            None => training,
        })
    }

    /// Checks that epoch `epoch` can be restored: the adapter directory holds this
    /// classifier's adapter (same name and config) and head, and the optimiser and scheduler
    /// files read.
    pub fn check_resume(&self, epoch: usize) -> Result<()> {
        self.restored(epoch)?;
        let optimizer = self.directory.join(format!("optim-{epoch}.bpk"));
        check_record::<OptimizerRecord>(&optimizer)?;
        let scheduler = self.directory.join(format!("scheduler-{epoch}.bpk"));
        check_record::<LrSchedulerRecord>(&scheduler)
    }

    fn template(&self) -> AdapterClassifier<M> {
        let guard = self.template.lock().unwrap_or_else(PoisonError::into_inner);
        guard.clone()
    }

    /// The template with epoch `epoch`'s adapter and head, under the template's parameter ids.
    fn restored(&self, epoch: usize) -> Result<AdapterClassifier<M>> {
        let dir = self.adapter_dir(epoch);
        let template = self.template();
        let adapter = template.head().to_string();
        let mut model = template.model().clone();
        let config = model.adapter_config(&adapter)?.clone();
        let head = model.head(&adapter)?.config.clone();
        let foreign = |what: String| Error::input(dir.display().to_string(), what);
        let found = saved_adapter_name(&dir)?;
        if found != adapter {
            return Err(foreign(format!(
                "a checkpoint of adapter `{found}`, not `{adapter}`"
            )));
        }
        model.delete_adapter(&adapter)?;
        model.delete_head(&adapter)?;
        model.load_adapter(&dir)?;
        if model.adapter_config(&adapter)? != &config {
            return Err(foreign(format!("adapter `{adapter}` has another config")));
        }
        if !model.has_head(&adapter) || model.head(&adapter)?.config != head {
            return Err(foreign(format!(
                "no head `{adapter}` of the config trained"
            )));
        }
        let restored = template.with_model(model);
        Ok(restored.map(&mut KeepIds {
            ids: &self.ids,
            path: Vec::new(),
        }))
    }
}

fn check_record<R: Checkpoint>(path: &Path) -> Result<()> {
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such checkpoint"),
        ));
    }
    R::load(path.to_path_buf())
        .map(|_| ())
        .map_err(|e| Error::format(path, e.to_string()))
}

fn checkpointer_error(error: Error) -> CheckpointerError {
    CheckpointerError::Unknown(error.to_string())
}

impl<M: Classify> Checkpointer<ModuleRecord> for AdapterCheckpointer<M> {
    fn save(
        &self,
        epoch: usize,
        record: ModuleRecord,
    ) -> std::result::Result<(), CheckpointerError> {
        let model = self
            .template()
            .try_load_record(record)
            .map_err(CheckpointerError::Record)?;
        model
            .model()
            .save_adapter(self.adapter_dir(epoch), model.head())
            .map_err(checkpointer_error)
    }

    fn delete(&self, epoch: usize) -> std::result::Result<(), CheckpointerError> {
        let dir = self.adapter_dir(epoch);
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(CheckpointerError::IOError)?;
        }
        Ok(())
    }

    fn restore(&self, epoch: usize) -> std::result::Result<ModuleRecord, CheckpointerError> {
        self.restored(epoch)
            .map(Module::into_record)
            .map_err(checkpointer_error)
    }
}

/// Every float parameter's id, by path.
#[derive(Default)]
struct IdsByPath {
    path: Vec<String>,
    ids: BTreeMap<String, ParamId>,
}

impl ModuleVisitor for IdsByPath {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.ids.insert(self.path.join("."), param.id);
    }
}

/// Gives each float parameter the id its path had in the template, so that the optimiser's
/// state, keyed by ids, finds the reloaded adapter's parameters.
struct KeepIds<'a> {
    ids: &'a BTreeMap<String, ParamId>,
    path: Vec<String>,
}

impl ModuleMapper for KeepIds<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let id = self.ids.get(&self.path.join(".")).copied().unwrap_or(id);
        Param::from_mapped_value(id, tensor, mapper)
    }
}
