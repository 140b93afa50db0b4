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
export { writeSyntheticWorld, readWorldTruth, worldCase } from './synth/world.js';
export type { World, WorldCase, WorldOptions, Split } from './synth/world.js';
export { MODALITIES, FINDINGS } from './synth/truth.js';
export type { Modality, Truth } from './synth/truth.js';
export { generateInstruct, instructMessages, cleanAnswer, parseConversation } from './synth/instruct.js';
export type { GenerateInstructOptions, GenerateInstructResult, Figure } from './synth/instruct.js';
export { trainBpe } from './tokenizer/train.js';
export type { TrainBpeOptions } from './tokenizer/train.js';
export { closedHit, normalizeAnswer, openRecall, scoreVqa } from './eval/vqa-metrics.js';
export type { VqaItem, VqaScore } from './eval/vqa-metrics.js';
export { evalVqa, readVqaFile, vqaTable } from './eval/vqa.js';
export type { EvalVqaOptions, EvalVqaResult, VqaQuestion } from './eval/vqa.js';
export { evalChat, chatTable, judgeMessages, parseJudgeScores, truthScore } from './eval/chat.js';
export type { ChatGroupScore, ChatQuestion, EvalChatOptions, EvalChatResult } from './eval/chat.js';
export { buildDemo, DEMO_SHAPE, DEMO_STAGES, DEMO_STAGE_DEFAULTS } from './demo/build.js';
export type { BuildDemoOptions, DemoBuild, DemoStage, StageSettings } from './demo/build.js';
export { evaluateDemo } from './demo/evaluate.js';
export type { DemoEvaluation } from './demo/evaluate.js';
export { corpusBleu, evalReport, findingsF1, labelReport, OBSERVATIONS, reportTable, rougeL, scoreReports, tokenize13a } from './eval/report.js';
export type { BleuResult, EvalReportOptions, F1Scores, Label, Observation, ReportScores } from './eval/report.js';
