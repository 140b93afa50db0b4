/**
 * Text written from a case's ground truth: a PMC-style figure caption, the sentences of the "paper" that cite
 * the figure, stage-1 "describe the image" instructions, VQA-RAD-style questions (CLOSED yes/no and OPEN short
 * answers), and the offline conversation writer's multi-turn dialogues. Wording varies with a seeded generator;
 * the facts never do.
 */
import type { Rand } from './canvas.js';
import { FINDINGS, findingName, MODALITIES, type Modality, type Truth, whereText } from './truth.js';

const NUMBER = ['no', 'one', 'two', 'three', 'four', 'five', 'six'];
const plural = (f: string) => f.endsWith('s') ? f : f === 'mass' ? 'masses' : `${f}s`;

/** the imaging study in caption words */
function studyPhrase(t: Truth, rng: Rand): string {
  switch (t.modality) {
    case 'chest_xray':
      return rng.pick(t.view === 'PA'
        ? ['Posteroanterior chest radiograph', 'PA chest X-ray', 'Frontal (PA) chest radiograph', 'Chest radiograph, PA view']
        : ['Anteroposterior chest radiograph', 'AP chest X-ray', 'Portable AP chest radiograph', 'Chest radiograph, AP view']);
    case 'ct_scan': {
      const c = t.contrast ? rng.pick(['contrast-enhanced', 'post-contrast']) : rng.pick(['non-contrast', 'unenhanced']);
      return rng.pick([`Axial ${c} CT of the ${t.organ}`, `${cap(c)} axial CT image of the ${t.organ}`, `Axial ${c} computed tomography of the ${t.organ}`]);
    }
    case 'mri':
      return rng.pick([`Axial ${t.sequence}-weighted MRI of the brain`, `Axial ${t.sequence}-weighted brain MR image`,
        `Brain MRI, axial ${t.sequence}-weighted sequence`]);
    case 'histology': {
      const stain = t.stain === 'H&E' ? rng.pick(['H&E', 'hematoxylin and eosin']) : rng.pick(['IHC', 'immunohistochemical']);
      return rng.pick([`Histopathology of the ${t.organ} (${stain} stain, original magnification x${t.magnification})`,
        `Photomicrograph of ${t.organ} tissue (${stain}, x${t.magnification})`,
        `${cap(stain)}-stained section of the ${t.organ} at x${t.magnification}`]);
    }
    case 'gross':
      return rng.pick([`Gross photograph of the cut surface of the ${t.organ}`, `Gross specimen of the ${t.organ}, cut surface`,
        `Macroscopic view of the resected ${t.organ}`]);
  }
}

/** "a" or "an" before `next` (by sound: "an 11 mm", "an 8 mm", "a 15 mm", "an enlarged") */
const a = (next: string) => /^(8|11|18|8\d)\b|^[aeio]/i.test(next) ? `an ${next}` : `a ${next}`;

const cap = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

/** the finding in caption words (with size, count, place); null for a normal study */
export function findingPhrase(t: Truth, rng: Rand): string | null {
  const where = whereText(t);
  const size = t.sizeMm ? `${t.sizeMm} mm ` : '';
  switch (t.finding) {
    case 'none': return null;
    case 'nodule': case 'mass': case 'renal mass':
      return a(`${size}${rng.pick(['', 'well-defined ', 'rounded '])}${t.finding === 'renal mass' ? 'mass' : t.finding} in the ${where}`);
    case 'pleural effusion': return `a ${t.side}${rng.pick(['-sided', ''])} pleural effusion`;
    case 'pneumothorax': return `a ${t.side}${rng.pick(['-sided', ''])} pneumothorax`;
    case 'cardiomegaly': return rng.pick(['cardiomegaly', 'an enlarged cardiac silhouette (cardiomegaly)']);
    case 'liver lesion':
      return t.count === 1 ? a(`${size}hypodense lesion in the liver`) : `${NUMBER[t.count!]} hypodense liver lesions, the largest ${t.sizeMm} mm`;
    case 'white matter lesions':
      return `${NUMBER[t.count!]} ${t.sequence === 'T2' ? 'hyperintense' : 'hypointense'} periventricular white matter lesions`;
    case 'carcinoma': {
      const name = findingName(t);
      return t.stain === 'IHC' ? `${name} with strong nuclear positivity in the tumor cells`
        : `${name} with ${rng.pick(['irregular crowded glands and atypical nuclei', 'pleomorphic hyperchromatic nuclei'])}`;
    }
    case 'inflammation': return `a dense ${rng.pick(['lymphocytic', 'chronic inflammatory'])} infiltrate (inflammation)`;
    case 'tumor':
      return t.count === 1 ? a(`${size}well-circumscribed tan-white tumor`) : `${NUMBER[t.count!]} tan-white tumors, the largest ${t.sizeMm} mm`;
    case 'cyst': return t.count === 1 ? a(`${size}smooth-walled cyst`) : `${NUMBER[t.count!]} smooth-walled cysts, the largest ${t.sizeMm} mm`;
    case 'hemorrhage': return `areas of hemorrhage`;
    default: return t.finding;
  }
}

function normalPhrase(t: Truth, rng: Rand): string {
  switch (t.modality) {
    case 'chest_xray': return rng.pick(['no acute cardiopulmonary abnormality', 'clear lungs and a normal cardiac silhouette', 'normal findings']);
    case 'ct_scan': return rng.pick([`no focal abnormality of the ${t.organ}`, 'normal findings', `an unremarkable ${t.organ}`]);
    case 'mri': return rng.pick(['no focal lesion', 'normal brain parenchyma and ventricles', 'normal findings']);
    case 'histology': return rng.pick([`normal ${t.organ} tissue without atypia`, `unremarkable ${t.organ} architecture`, 'normal histology']);
    case 'gross': return rng.pick(['a normal cut surface', 'no focal lesion', `an unremarkable ${t.organ}`]);
  }
}

/** "<study> showing <finding>." — a PMC figure caption (the figure's label is kept apart, as PMC does) */
export function caption(t: Truth, rng: Rand): string {
  const f = findingPhrase(t, rng);
  const verb = rng.pick(['showing', 'demonstrating', 'revealing', 'with']);
  let s = `${studyPhrase(t, rng)} ${verb} ${f ?? normalPhrase(t, rng)}.`;
  if (t.finding === 'mass' && t.modality === 'mri') s = s.replace(/\.$/, rng.pick([' with surrounding edema.', ' and perilesional edema.']));
  return s;
}

const STUDY_SHORT: Record<Modality, string[]> = {
  chest_xray: ['chest radiograph', 'chest X-ray'], ct_scan: ['CT scan', 'computed tomography'], mri: ['brain MRI', 'MRI of the brain'],
  histology: ['histological examination', 'microscopy'], gross: ['gross examination', 'macroscopic examination'],
};

/** one to three sentences that cite the figure, as a paper's text would */
export function inlineMentions(t: Truth, rng: Rand, label: string): string[] {
  const ref = rng.pick([`(${label})`, `(${label.replace('Figure', 'Fig.')})`]);
  const study = rng.pick(STUDY_SHORT[t.modality]);
  const f = findingPhrase(t, rng);
  const out = [f
    ? rng.pick([`The ${study} revealed ${f} ${ref}.`, `${cap(study)} showed ${f} ${ref}.`, `On ${study}, there was ${f} ${ref}.`])
    : rng.pick([`The ${study} was unremarkable ${ref}.`, `${cap(study)} showed ${normalPhrase(t, rng)} ${ref}.`])];
  if (rng.chance(0.6)) {
    out.push(rng.pick([`A ${study} was obtained at presentation ${ref}.`, `Representative images are shown in ${label}.`,
      `The patient underwent ${study} ${ref}.`]));
  }
  if (rng.chance(0.3) && f) out.push(`These findings prompted further evaluation ${ref}.`);
  return rng.shuffle(out);
}

/** stage-1 instructions, written here: a brief description and a detailed one (LLaVA-Med picks by caption length) */
export const BRIEF_INSTRUCTIONS = [
  'Describe the image briefly.', 'Give a short description of this figure.', 'Summarize what the image shows.',
  'What does this image show? Answer in one sentence.', 'Write a concise caption for the image.',
  'Provide a brief summary of the figure.', 'In a few words, what is shown here?', 'Offer a short explanation of the image.',
  'State briefly what is depicted.', 'Sum up the visual content of the image.', 'Give a one-line description of this picture.',
];
export const DETAILED_INSTRUCTIONS = [
  'Describe the image in detail.', 'Give a detailed description of this figure.', 'Explain what is shown in the image thoroughly.',
  'Walk through the contents of this image.', 'What do you see in this image? Be thorough.', 'Provide an in-depth account of the figure.',
  'Describe every notable finding in this picture.', 'Characterize the image carefully.', 'Analyze the figure and describe it fully.',
  'Write a comprehensive description of the image.', 'Tell me about this image in detail.', 'Examine the image and report what it shows.',
  'Offer a careful, detailed reading of the figure.', 'Discuss the visual features of the image.', 'Describe the findings in this image.',
  'Give an elaborate explanation of what appears in the image.',
];

export type AnswerType = 'CLOSED' | 'OPEN';
export interface Question { question: string; answer: string; answerType: AnswerType; questionType: string }

const MOD_Q: Record<Modality, { name: string; q: string }> = {
  chest_xray: { name: 'chest x-ray', q: 'an x-ray' }, ct_scan: { name: 'ct', q: 'a ct scan' }, mri: { name: 'mri', q: 'an mri' },
  histology: { name: 'histopathology', q: 'a histology slide' }, gross: { name: 'gross specimen', q: 'a gross specimen' },
};

/** VQA-RAD-style questions about the case: `n` of them, about half CLOSED (yes and no balanced) */
export function vqaQuestions(t: Truth, rng: Rand, n = 5): Question[] {
  const closed: (() => Question)[] = [], open: (() => Question)[] = [];
  const C = (question: string, yes: boolean, questionType: string): Question => ({ question, answer: yes ? 'yes' : 'no', answerType: 'CLOSED', questionType });
  const O = (question: string, answer: string, questionType: string): Question => ({ question, answer, answerType: 'OPEN', questionType });
  const abnormal = t.finding !== 'none';
  const fname = findingName(t);
  closed.push(() => {
    const yes = rng.chance(0.5);
    const m = yes ? t.modality : rng.pick(MODALITIES.filter((x) => x !== t.modality));
    return C(rng.pick([`Is this ${MOD_Q[m].q}?`, `Is this image ${MOD_Q[m].q}?`]), yes, 'MODALITY');
  });
  closed.push(() => {
    const others = FINDINGS[t.modality].slice(1).filter((f) => f !== t.finding);
    const yes = abnormal && rng.chance(0.7); // about half of all PRES answers are yes (70 % of cases are abnormal)
    const f = yes ? t.finding : rng.pick(others);
    const shown = t.modality === 'histology' && f === 'carcinoma' ? 'carcinoma' : f;
    return C(rng.pick([`Is there ${f.endsWith('s') ? '' : 'a '}${shown}?`, `Is there evidence of ${shown}?`, `Does the image show ${shown}?`])
      .replace('a inflammation', 'inflammation').replace('a cardiomegaly', 'cardiomegaly').replace('a hemorrhage', 'hemorrhage'), yes, 'PRES');
  });
  closed.push(() => rng.chance(0.5)
    ? C(rng.pick(['Is this image normal?', 'Is this a normal study?', 'Are the findings normal?']), !abnormal, 'ABN')
    : C(rng.pick(['Is there an abnormality?', 'Is anything abnormal?', 'Are there abnormal findings?']), abnormal, 'ABN'));
  if (t.side) {
    closed.push(() => {
      const s = rng.pick(['left', 'right'] as const);
      return C(`Is the ${t.finding} on the ${s} side?`, s === t.side, 'POS');
    });
  }
  if (t.modality === 'ct_scan') closed.push(() => C(rng.pick(['Was contrast given?', 'Is this a contrast-enhanced scan?']), t.contrast === true, 'ATTRIB'));
  if (t.modality === 'mri') closed.push(() => { const s = rng.pick(['T1', 'T2']); return C(`Is this a ${s}-weighted image?`, s === t.sequence, 'MODALITY'); });
  if (t.modality === 'histology') closed.push(() => C('Is this stained with H&E?', t.stain === 'H&E', 'ATTRIB'));
  if (t.modality === 'chest_xray') closed.push(() => C(rng.pick(['Is the heart enlarged?', 'Is the cardiac silhouette enlarged?']), t.finding === 'cardiomegaly', 'SIZE'));

  open.push(() => O(rng.pick(['What type of image is this?', 'What imaging modality is shown?', 'What kind of image is this?']), MOD_Q[t.modality].name, 'MODALITY'));
  open.push(() => O(rng.pick(['What organ is shown?', 'Which organ is in the image?', 'What part of the body is shown?']), t.organ, 'ORGAN'));
  open.push(() => O(rng.pick(['What is the main finding?', 'What abnormality is seen?', 'What is abnormal in this image?']), abnormal ? fname : 'normal', 'ABN'));
  if (abnormal && whereText(t) && t.location !== t.organ) {
    open.push(() => O(`Where is the ${t.finding === 'white matter lesions' ? 'lesion' : t.finding.replace('renal ', '')} located?`, whereText(t)!, 'POS'));
  }
  if (t.count && t.count > 1) open.push(() => O(`How many ${plural(t.finding.replace('liver ', '').replace('white matter ', ''))} are there?`, String(t.count), 'COUNT'));
  if (t.modality === 'mri') open.push(() => O('What MRI sequence is this?', t.sequence!, 'MODALITY'));
  if (t.modality === 'histology') open.push(() => O('What stain was used?', t.stain!, 'ATTRIB'));
  if (t.modality === 'chest_xray') open.push(() => O('What view is this radiograph?', t.view, 'PLANE'));
  if (t.modality === 'ct_scan' || t.modality === 'mri') open.push(() => O('In which plane is this image?', 'axial', 'PLANE'));

  const nClosed = Math.ceil(n / 2), nOpen = n - nClosed;
  const take = (xs: (() => Question)[], k: number) => rng.shuffle([...xs]).slice(0, k).map((f) => f());
  return [...take(closed, nClosed), ...take(open, nOpen)];
}

/** a sentence that says what kind of image it is */
export function studySentence(t: Truth, rng: Rand): string {
  switch (t.modality) {
    case 'chest_xray': return `This is a chest X-ray taken in the ${t.view === 'PA' ? 'posteroanterior (PA)' : 'anteroposterior (AP)'} view.`;
    case 'ct_scan': return `This is an axial CT image of the ${t.organ}, acquired ${t.contrast ? 'with' : 'without'} intravenous contrast.`;
    case 'mri': return `This is an axial ${t.sequence}-weighted MRI of the brain.`;
    case 'histology': return `This is a ${t.stain === 'H&E' ? 'hematoxylin and eosin (H&E)' : 'immunohistochemistry (IHC)'} stained section of ${t.organ} tissue at ${t.magnification === 40 ? 'high' : 'low'} magnification.`;
    case 'gross': return rng.pick([`This is a gross photograph of the cut surface of a ${t.organ} specimen.`, `The image shows the cut surface of a resected ${t.organ}.`]);
  }
}

export function findingSentence(t: Truth, rng: Rand): string {
  const f = findingPhrase(t, rng);
  if (!f) return `The image appears normal: ${normalPhrase(t, rng)}.`;
  return rng.pick([`The image shows ${f}.`, `There is ${f}.`, `I can see ${f}.`]);
}

const CAUTION = [
  'Imaging findings like this need to be interpreted with the clinical picture by a qualified specialist.',
  'A definitive assessment should be made by a radiologist or pathologist together with the clinical history.',
  'Further evaluation by a medical professional would be needed to decide what it means for the patient.',
];

export interface Turn { from: 'human' | 'gpt'; value: string }

/**
 * The offline conversation writer: two to four question/answer rounds about the case, written from its
 * ground truth, as the self-instruct data would have them (what the image is, what it shows, where, what it
 * may mean). No `<image>` tag: the caller places it.
 */
export function ruleConversation(t: Truth, rng: Rand): Turn[] {
  const rounds: [string, string][] = [];
  rounds.push([rng.pick(['What type of image is this?', 'What kind of imaging study is this?', 'Can you tell me what this image is?']),
    studySentence(t, rng)]);
  rounds.push([rng.pick(['What are the main findings in this image?', 'Do you see anything abnormal?', 'What does the image show?']),
    findingSentence(t, rng)]);
  if (t.finding !== 'none' && whereText(t) && rng.chance(0.7)) {
    rounds.push([rng.pick(['Where exactly is the abnormality?', 'Where is it located?']),
      `It is located in the ${whereText(t)}${t.sizeMm && t.count === 1 ? `, measuring about ${t.sizeMm} mm` : ''}.`]);
  }
  if (t.count && t.count > 1 && rng.chance(0.7)) rounds.push(['How many lesions can you see?', `There are ${NUMBER[t.count]} (${t.count}) lesions.`]);
  if (rng.chance(0.5)) {
    rounds.push([rng.pick(['What could this mean for the patient?', 'Is this something to worry about?']),
      t.finding === 'none' ? `Nothing abnormal is visible in this image. ${rng.pick(CAUTION)}` : `The image suggests ${findingName(t)}. ${rng.pick(CAUTION)}`]);
  }
  return rounds.slice(0, 4).flatMap(([q, a]) => [{ from: 'human' as const, value: q }, { from: 'gpt' as const, value: a }]);
}

/** a detailed description of the case (the reference answer of a description question) */
export function describeCase(t: Truth, rng: Rand): string {
  const where = t.finding !== 'none' && whereText(t) && t.location !== t.organ ? ` It is located in the ${whereText(t)}.` : '';
  return `${studySentence(t, rng)} ${findingSentence(t, rng)}${where}`;
}

/** a chest radiograph's findings section written from the truth (the reference of `eval report` on the world) */
export function cxrReport(t: Truth, rng: Rand): string {
  const out: string[] = [t.finding === 'cardiomegaly' ? rng.pick(['The heart is enlarged.', 'There is cardiomegaly.']) : rng.pick(['Heart size is normal.', 'The cardiac silhouette is normal.'])];
  if (t.finding === 'nodule' || t.finding === 'mass') out.push(`There is ${a(`${t.sizeMm} mm ${t.finding} in the ${t.side} ${t.location}`)}.`);
  else if (t.finding === 'pleural effusion') out.push(`There is a ${t.side} pleural effusion.`);
  else if (t.finding === 'pneumothorax') out.push(`There is a ${t.side} pneumothorax.`);
  const absent = ['pleural effusion', 'pneumothorax'].filter((f) => f !== t.finding);
  out.push(t.finding === 'none' || t.finding === 'cardiomegaly' ? `The lungs are clear. No ${absent.join(' or ')}.` : `No ${absent.join(' or ')}.`);
  return out.join(' ');
}
