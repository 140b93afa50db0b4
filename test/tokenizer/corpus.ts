import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { parseSentencePieceModel } from '../../lib/tokenizer/sentencepiece.js';
import { SentencePieceTokenizer } from '../../lib/tokenizer/tokenizer.js';

/** A varied corpus for tokenizer training and parity: clinical English, numbers and units,
 * Chinese (LLaVA-Med answers Chinese questions), emoji, whitespace runs, markup-like text. */
export const CLINICAL = [
  'The chest X-ray shows a right lower lobe consolidation consistent with pneumonia.',
  'No pneumothorax or pleural effusion is identified. Heart size is within normal limits.',
  'CT of the abdomen demonstrates a 2.3 cm hypodense lesion in segment VII of the liver.',
  'MRI brain: T2/FLAIR hyperintensities in the periventricular white matter, likely chronic small vessel disease.',
  'Histopathology reveals nests of atypical squamous cells with keratin pearls (H&E, 40x).',
  'Gross pathology: a well-circumscribed, tan-yellow mass measuring 4.5 x 3.2 x 2.8 cm.',
  'Findings: Bilateral interstitial opacities. Impression: Possible atypical infection; recommend follow-up.',
  'Patient is a 67-year-old male with a history of COPD, HTN and type 2 diabetes mellitus.',
  'Labs: WBC 12.4 x10^9/L, CRP 87 mg/L, lactate 2.1 mmol/L, eGFR 54 mL/min/1.73m².',
  'Vitals: BP 142/88 mmHg, HR 104 bpm, SpO2 91% on room air, T 38.6 °C.',
  'Is there evidence of cardiomegaly? Yes. Is the trachea midline? No, deviated to the left.',
  'What modality is this? Computed tomography with IV contrast, arterial phase.',
  'Q: Where is the abnormality located?\nA: In the left upper quadrant, adjacent to the spleen.',
  '<image>\nDescribe the findings in this radiograph.',
  '### Human: What is shown?\n### Assistant: An axial CT slice of the thorax.',
];
const numbers = ['0', '7', '42', '3.14159', '1,000,000', '2024-11-22', '12:45:07', '-0.5e-3', '99.9%', '1/2', '#12345',
  'v1.5', 'x86_64', '0x1F', '10⁻⁶', '½', '5 mg/kg/day', '120/80'];
const chinese = ['这张胸部X光片显示右下肺叶实变。', '图像中有什么异常吗？', '肝脏可见一个低密度病变，大小约2.3厘米。',
  '请描述这张病理切片。', '是否存在气胸？不存在。', '磁共振成像显示脑室周围白质高信号。'];
const emoji = ['🩻 X-ray', '🧠 MRI', '❤️ heart', '👍🏽', '🫁 lungs 🫁', '👨‍⚕️ doctor', '🇺🇸', 'café naïve résumé', 'Ωμέγα αβγ', 'Привет мир'];
const whitespace = ['two  spaces', 'three   spaces', '  leading', 'trailing  ', '\ttab\tseparated', 'new\nline',
  'mixed \t\n whitespace', ' ', '    ', 'a\r\nb', 'end.\n\n\nNext paragraph.'];

export const TRAIN_TEXT: string[] = (() => {
  const out: string[] = [];
  for (let r = 0; r < 40; r++) {
    for (const s of [...CLINICAL, ...chinese, ...emoji]) out.push(r % 2 ? s : s.toLowerCase());
    out.push(numbers.slice(r % numbers.length).join(' '));
  }
  return out;
})();

export const PARITY_TEXT: string[] = [
  ...CLINICAL, ...numbers, ...chinese, ...emoji, ...whitespace,
  '', 'a', 'A', '▁', '▁▁', 'x▁y', '<s>', '</s>', '<unk>', '[INST] hi [/INST]', 'USER: <image>\nWhat? ASSISTANT:',
  'supercalifragilisticexpialidocious', 'PNEUMONOULTRAMICROSCOPICSILICOVOLCANOCONIOSIS',
  '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝓂𝒶𝓉𝒽', '\u0000nul', 'zero\u200bwidth', 'ﬁ ligature', '한국어 텍스트', '日本語のテキスト',
  'Mixed 中文 and English 混合 text 123.',
  CLINICAL.join(' '),
];

/** A LLaMA-configured BPE SentencePiece model (vocabulary 900) trained here by Debian's spm_train on TRAIN_TEXT:
 * its file and our tokenizer over it (the template and training-label tests share it). */
export function trainedTestTokenizer(prefix: string): { file: string; tok: SentencePieceTokenizer } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  writeFileSync(join(dir, 'train.txt'), TRAIN_TEXT.join('\n'));
  const r = spawnSync('spm_train', [`--input=${join(dir, 'train.txt')}`, `--model_prefix=${join(dir, 'm')}`, '--model_type=bpe',
    '--vocab_size=900', '--byte_fallback=true', '--split_digits=true', '--normalization_rule_name=identity',
    '--remove_extra_whitespaces=false', '--allow_whitespace_only_pieces=true', '--pad_id=-1']);
  if (r.status !== 0) throw new Error('spm_train failed');
  const file = join(dir, 'm.model');
  return { file, tok: new SentencePieceTokenizer(parseSentencePieceModel(readFileSync(file), 'm')) };
}
