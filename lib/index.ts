/**
 * medllava — LLaVA-Med and LLaVA-Rad for Node.js. The public API (docs/API.md); nothing else is
 * public. Today: backend info, checkpoint discovery, tokenizers and templates, model loading, chat
 * and generation; training (the curriculum trainer `train` / `curriculum` and the low-level createTrainer);
 * evaluation is not implemented yet.
 */
export { getBackendInfo } from './backend.js';
export type { BackendInfo, CudaDeviceInfo } from './backend.js';
export { ERROR_CODES, isMedllavaError } from './errors.js';
export type { ErrorCode, MedllavaError } from './errors.js';
export { loadTokenizer } from './tokenizer/load.js';
export type { Tokenizer } from './tokenizer/tokenizer.js';
export { IMAGE_TOKEN_INDEX } from './tokenizer/tokenizer.js';
export { IGNORE_INDEX, TEMPLATES, renderPrompt, trainingExample } from './tokenizer/templates.js';
export type { Message, TemplateDefinition } from './tokenizer/templates.js';
export { loadModelSpec } from './model/spec.js';
export type { ModelFamily, ModelSpec } from './model/spec.js';
export { loadModel } from './model/model.js';
export type { Chat, ChatMessage, ImageInput, LoadModelOptions, Model, ModelParameter } from './model/model.js';
export type { GenerateOptions, Reply } from './generate.js';
export { createTrainer, scheduleFactor } from './train/trainer.js';
export { SeededRandom } from './sampling.js';
export { groupByModalityLength, loadConversations, modalityLength, sampleExample, sampleMessages } from './train/data.js';
export type { ConversationSample, ConversationTurn, DataProblem, LoadDataOptions, LoadedData } from './train/data.js';
export type { LearningRateSchedule, StepResult, Trainer, TrainerOptions, TrainerParameter, TrainingExample, TrainingStage } from './train/trainer.js';
export { curriculum, latestCheckpoint, recipeDefaults, train, TrainingRun } from './train/run.js';
export type { CurriculumOptions, CurriculumStage, Recipe, TrainEvent, TrainMetrics, TrainOptions, TrainResult } from './train/run.js';
