// Every stage runner this build has; each module registers itself. The pruning engine adds its modules here.
import './train_stage.js';
import './pruner.js';
