// Every stage runner this build has; each module registers itself.
import './train_stage.js';
import './pruner.js';
import './finetune.js';
