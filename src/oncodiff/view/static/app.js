// oncodiff view: the page. NiiVue draws the images; this file lists the patients, picks the layers and asks
// the server for what-if predictions. State the browser test waits for is in document.body.dataset.state.
"use strict";

const OVERLAY_STYLE = {
  drift: {colormap: "warm", colormapNegative: "winter", symmetric: true},
  difference: {colormap: "warm", colormapNegative: "winter", symmetric: true},
  std: {colormap: "inferno", floor: 0.2},
  agreement: {colormap: "viridis", floor: 0.0},
  tumor_probability: {colormap: "plasma", floor: 0.05},
};
const CONTOUR_COLOUR = {baseline_contour: "red", predicted_contour: "green", followup_contour: "blue"};

const state = {info: null, caseData: null, whatif: null, left: null, right: null, loading: 0};

function $(id) { return document.getElementById(id); }

function fmt(value, digits = 0, suffix = "") {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(digits)}${suffix}`;
}

function signed(value) {
  return value === null || value === undefined ? "–" : `${value > 0 ? "+" : ""}${Number(value).toFixed(0)} %`;
}

function interval(pair) {
  return pair ? `[${signed(pair[0])}, ${signed(pair[1])}]` : "";
}

function report(message) {
  const item = document.createElement("p");
  item.textContent = message;
  $("messages").appendChild(item);
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

function post(path, body) {
  return api(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
}

// ---- patients --------------------------------------------------------------------------------------------

async function loadPatients() {
  const rows = await api("/api/cases");
  const body = $("patients").tBodies[0];
  body.replaceChildren(...rows.map(patientRow));
  return rows;
}

function patientRow(row) {
  const tr = document.createElement("tr");
  if (!row.predicted) {
    tr.innerHTML = `<td>${row.patient_id}</td><td colspan="5"><button>predict</button> not predicted yet</td>`;
    tr.querySelector("button").onclick = () => predictPatient(row.patient_id, tr);
    return tr;
  }
  tr.dataset.key = row.key;
  const truth = row.change_pct_true === null || row.change_pct_true === undefined ? "unknown" : signed(row.change_pct_true);
  tr.innerHTML = `<td>${row.key}</td><td>${fmt(row.days)}</td>
    <td>${signed(row.change_pct)} <small>${interval(row.change_pct_interval_90)}</small></td>
    <td>${fmt(row.response_probability, 2)}</td><td>${truth}</td><td>${row.response_true ?? "unknown"}</td>`;
  tr.onclick = () => openCase(row.key);
  return tr;
}

async function predictPatient(patient, tr) {
  const cell = tr.cells[1];
  try {
    const job = await post("/api/predict", {patient});
    await followJob(job, (j) => { cell.textContent = j.message; });
    const rows = await loadPatients();
    const first = rows.find((r) => r.patient_id === patient && r.predicted);
    if (first) await openCase(first.key);
  } catch (error) {
    cell.textContent = "";
    report(error.message);
  }
}

// ---- one case --------------------------------------------------------------------------------------------

async function openCase(key) {
  document.body.dataset.state = "loading";
  $("messages").replaceChildren();
  for (const tr of $("patients").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.key === key);
  try {
    state.caseData = await api(`/api/case?key=${encodeURIComponent(key)}`);
  } catch (error) {
    report(error.message);
    document.body.dataset.state = "error";
    return;
  }
  state.whatif = null;
  $("whatif-result").hidden = true;
  $("whatif-status").textContent = "";
  fillLayerChoices();
  fillWhatIfForm();
  showTimeline();
  showGeometry();
  showExports();
  await redraw();
}

function layerChoices() {
  const layers = state.caseData.layers;
  const choices = [["mean", "predicted mean"], ["baseline", "baseline scan"]];
  if (layers.followup) choices.push(["followup", "true follow-up"]);
  for (const item of scansOnTimeline()) {
    if (item.role !== "baseline" && item.role !== "truth") choices.push([`scan:${item.timepoint}`, `${item.timepoint} scan (${item.role})`]);
  }
  layers.samples.forEach((_, k) => choices.push([`sample:${k}`, `sample ${k + 1}`]));
  if (state.whatif) choices.unshift(["whatif", "what-if mean"]);
  return choices;
}

function fillLayerChoices() {
  const choices = layerChoices();
  for (const [id, initial] of [["left-layer", "mean"], ["right-layer", state.whatif ? "whatif" : "baseline"]]) {
    const select = $(id);
    select.replaceChildren(...choices.map(([value, label]) => new Option(label, value)));
    select.value = initial;
  }
}

function layerFor(choice) {
  const layers = state.caseData.layers;
  if (choice === "whatif") return state.whatif.layers.mean;
  if (choice.startsWith("sample:")) return layers.samples[Number(choice.split(":")[1])];
  if (choice.startsWith("scan:")) return (scansOnTimeline().find((t) => `scan:${t.timepoint}` === choice) || {}).layer;
  return layers[choice];
}

function volumesFor(side) {
  const choice = $(`${side}-layer`).value;
  const own = choice === "whatif" ? state.whatif.layers : state.caseData.layers;
  const list = [{layer: layerFor(choice), colormap: "gray", name: choice}];
  const overlay = $("overlay").value;
  if (overlay === "difference") {
    if (side === "right" && state.whatif) list.push({layer: state.whatif.difference, name: "difference"});
  } else if (overlay) {
    list.push({layer: own[overlay], name: overlay});
  }
  for (const box of document.querySelectorAll(".contour:checked")) {
    list.push({layer: own[box.value] || state.caseData.layers[box.value], name: box.value});
  }
  return list.filter((v) => {
    if (v.layer && v.layer.error) report(v.layer.error);
    return v.layer && v.layer.url;
  });
}

async function viewer(side) {
  if (state[side]) return state[side];
  const nv = new niivue.Niivue({backColor: [0, 0, 0, 1], isRadiologicalConvention: $("radiological").checked,
    crosshairColor: [1, 0.85, 0.1, 0.6], crosshairWidth: 0.5, show3Dcrosshair: false,
    isResizeCanvas: true});
  await nv.attachToCanvas($(`nv-${side}`));
  nv.onLocationChange = (data) => { $("location").textContent = data.string || ""; syncSlider(nv); };
  state[side] = nv;
  return nv;
}

async function redraw() {
  state.loading += 1;
  document.body.dataset.state = "loading";
  try {
    const [left, right] = [await viewer("left"), await viewer("right")];
    await Promise.all([load(left, volumesFor("left")), load(right, volumesFor("right"))]);
    left.broadcastTo([right], {"2d": true, "3d": true});
    applySliceType();
    readWindow(left);
  } finally {
    state.loading -= 1;
    if (!state.loading) document.body.dataset.state = "ready";
  }
}

async function load(nv, volumes) {
  try {
    await nv.loadVolumes(volumes.map((v) => ({url: v.layer.url, name: v.layer.url.split("/").pop(),
      colormap: v.colormap || "gray", opacity: 1.0})));
  } catch (error) {
    report(`could not load ${volumes.map((v) => v.name).join(", ")}: ${error.message || error}`);
    return;
  }
  volumes.forEach((v, i) => { if (i > 0) styleOverlay(nv.volumes[i], v.name); });
  nv.updateGLVolume();
}

function styleOverlay(volume, name) {
  if (CONTOUR_COLOUR[name]) {
    Object.assign(volume, {colormap: CONTOUR_COLOUR[name], cal_min: 0.5, cal_max: 1.0, opacity: 1.0});
    return;
  }
  const style = OVERLAY_STYLE[name] || {colormap: "warm", floor: 0};
  const top = Math.max(Math.abs(volume.global_min), Math.abs(volume.global_max)) || 1;
  volume.colormap = style.colormap;
  volume.opacity = 0.7;
  if (style.symmetric) {
    volume.colormapNegative = style.colormapNegative;
    Object.assign(volume, {cal_min: 0.1 * top, cal_max: top, cal_minNeg: -top, cal_maxNeg: -0.1 * top});
  } else {
    Object.assign(volume, {cal_min: style.floor * top, cal_max: top});
  }
}

function applySliceType() {
  const type = state.info.dims === 2 ? 0 : Number($("view").value);
  for (const nv of [state.left, state.right]) {
    nv.setSliceType(type);
    nv.setRadiologicalConvention($("radiological").checked);
  }
  showGeometry();
}

function readWindow(nv) {
  const volume = nv.volumes[0];
  if (!volume) return;
  $("window").value = Number(volume.cal_max - volume.cal_min).toPrecision(4);
  $("level").value = Number((volume.cal_max + volume.cal_min) / 2).toPrecision(4);
}

function applyWindow() {
  const width = Number($("window").value);
  const level = Number($("level").value);
  if (!(width > 0) || !Number.isFinite(level)) return;
  for (const nv of [state.left, state.right]) {
    if (!nv || !nv.volumes[0]) continue;
    nv.volumes[0].cal_min = level - width / 2;
    nv.volumes[0].cal_max = level + width / 2;
    nv.updateGLVolume();
  }
}

function sliceAxis() {
  return [2, 1, 0][Number($("view").value)] ?? 2;  // axial moves along z, coronal along y, sagittal along x
}

function syncSlider(nv) {
  $("slice").value = Math.round(1000 * nv.scene.crosshairPos[sliceAxis()]);
}

function moveSlice() {
  for (const nv of [state.left, state.right]) {
    if (!nv) continue;
    const position = [...nv.scene.crosshairPos];
    position[sliceAxis()] = Number($("slice").value) / 1000;
    nv.scene.crosshairPos = position;
    nv.drawScene();
  }
}

// ---- timeline --------------------------------------------------------------------------------------------

const ROLE_TEXT = {baseline: "baseline (input)", input: "input", "not used": "not used", truth: "true follow-up",
  later: "later, not used", unknown: "input not recorded", predicted: "predicted"};

function scansOnTimeline() {
  return ((state.caseData && state.caseData.timeline) || []).filter((t) => t.role !== "predicted");
}

function timelineItem(item) {
  const li = document.createElement("li");
  li.className = `role-${item.role.replace(" ", "-")}`;
  li.dataset.role = item.role;
  const label = `day ${fmt(item.days)} · ${item.timepoint} · ${ROLE_TEXT[item.role] || item.role}`;
  if (item.role === "predicted") {
    li.textContent = label;
    return li;
  }
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;  // cohort text is shown as text, never as markup
  button.onclick = () => {
    const choice = item.role === "baseline" ? "baseline" : item.role === "truth" ? "followup" : `scan:${item.timepoint}`;
    if (![...$("left-layer").options].some((o) => o.value === choice)) return;
    $("left-layer").value = choice;
    redraw();
  };
  li.append(button);
  return li;
}

function showTimeline() {
  $("timeline").replaceChildren(...(state.caseData.timeline || []).map(timelineItem));
}

function inputsOf(timeline) {
  return (timeline || []).filter((t) => t.role === "baseline" || t.role === "input")
    .map((t) => `${t.timepoint} (day ${fmt(t.days)})`).join(", ");
}

function showGeometry() {
  const g = state.caseData && state.caseData.geometry;
  if (!g) return;
  const display = $("radiological").checked ? "radiological (the patient's left on the screen's right)"
    : "neurological (the patient's left on the screen's left)";
  $("geometry").textContent = `${g.dims}D, ${g.shape.join(" × ")} voxels of ${g.spacing_mm.join(" × ")} mm, ` +
    `axes ${g.orientation} (from the scan's affine); shown ${display}`;
}

function showExports() {
  const links = [["factual", state.caseData.set, state.caseData.row.key]];
  if (state.whatif) links.push(["what-if", state.whatif.set, state.whatif.row.key]);
  $("exports").replaceChildren(...links.map(([label, set, key]) => {
    const a = document.createElement("a");
    a.href = `/api/export?set=${encodeURIComponent(set)}&key=${encodeURIComponent(key)}&layer=mean`;
    a.textContent = `${label} prediction (mean) .nii.gz`;
    a.className = "export";
    return a;
  }));
}

// ---- what-if ---------------------------------------------------------------------------------------------

function fillWhatIfForm() {
  const info = state.info;
  const response = $("whatif-response");
  $("response-field").hidden = !info.class_options.length;
  response.replaceChildren(...info.class_options.map((v) => new Option(v || "unknown (the model's prior)", v)));
  $("clinical-fields").replaceChildren(...info.variables.map(clinicalField));
  $("whatif-days").value = state.caseData.row.days;
}

function clinicalField(variable) {
  const label = document.createElement("label");
  const value = state.caseData.clinical[variable.name] ?? "";
  let input;
  if (variable.type === "categorical") {
    input = document.createElement("select");
    input.append(new Option("unknown", ""), ...variable.categories.map((c) => new Option(c, c)));
  } else {
    input = document.createElement("input");
    input.type = "text";
    input.inputMode = "decimal";
    if (variable.range) input.title = `from ${variable.range[0]} to ${variable.range[1]}`;
  }
  input.value = value;
  input.dataset.variable = variable.name;
  input.className = "clinical";
  label.append(`${variable.name}${variable.unit ? ` (${variable.unit})` : ""} `, input);
  return label;
}

async function askWhatIf(event) {
  event.preventDefault();
  const clinical = {};
  for (const input of document.querySelectorAll(".clinical")) clinical[input.dataset.variable] = input.value;
  const question = {key: state.caseData.row.key, days: $("whatif-days").value, response: $("whatif-response").value,
    clinical};
  $("whatif-status").textContent = "";
  $("whatif-status").classList.remove("error");
  $("whatif-run").disabled = true;
  document.body.dataset.state = "predicting";
  try {
    const job = await post("/api/whatif", question);
    const done = await followJob(job, showProgress);
    state.whatif = done.result;
    showWhatIf();
    fillLayerChoices();
    showExports();
    await redraw();
    document.body.dataset.state = "whatif-done";
  } catch (error) {
    $("whatif-status").textContent = error.message;
    $("whatif-status").classList.add("error");
    document.body.dataset.state = "whatif-error";
  } finally {
    $("whatif-run").disabled = false;
    $("whatif-progress").hidden = true;
  }
}

function showProgress(job) {
  const bar = $("whatif-progress");
  bar.hidden = false;
  bar.max = Math.max(job.total, 1);
  bar.value = job.done;
  $("whatif-status").textContent = job.message;
}

async function followJob(job, onProgress) {
  while (job.status === "queued" || job.status === "running") {
    onProgress(job);
    await new Promise((resolve) => setTimeout(resolve, 400));
    job = await api(`/api/jobs/${job.id}`);
  }
  if (job.status === "error") throw new Error(job.message);
  return job;
}

function showWhatIf() {
  const [f, w] = [state.caseData.row, state.whatif.row];
  const lines = [["days since baseline", fmt(f.days), fmt(w.days)],
    ["conditions", state.caseData.overrides.join(", ") || "as recorded", state.whatif.overrides.join(", ") || "as recorded"],
    ["volume change", `${signed(f.change_pct)} ${interval(f.change_pct_interval_90)}`,
      `${signed(w.change_pct)} ${interval(w.change_pct_interval_90)}`],
    ["P(response)", fmt(f.response_probability, 2), fmt(w.response_probability, 2)],
    ["predicted response", f.response ?? "–", w.response ?? "–"]];
  $("whatif-table").tBodies[0].replaceChildren(...lines.map((cells) => {
    const tr = document.createElement("tr");
    cells.forEach((text, i) => { const td = document.createElement(i ? "td" : "th"); td.textContent = text; tr.append(td); });
    return tr;
  }));
  $("whatif-inputs").textContent = `the what-if at day ${fmt(w.days)} is predicted from: ${inputsOf(state.whatif.timeline)}`;
  drawCurve(state.whatif.curve);
  $("whatif-result").hidden = false;
  $("whatif-status").textContent = "done: the what-if mean is on the right; overlay 'what-if − factual' shows the difference";
}

function drawCurve(curve) {
  const svg = $("curve");
  const points = [...curve.factual, ...curve.whatif].filter((p) => p.change_pct !== null);
  if (!points.length) { svg.innerHTML = "<text x='10' y='20'>no measurable volume change</text>"; return; }
  const lows = points.map((p) => (p.interval_90 ? p.interval_90[0] : p.change_pct));
  const highs = points.map((p) => (p.interval_90 ? p.interval_90[1] : p.change_pct));
  const [x0, x1] = [0, Math.max(...points.map((p) => p.days)) * 1.05];
  const [y0, y1] = [Math.min(0, ...lows) - 5, Math.max(0, ...highs) + 5];
  const X = (d) => 45 + (305 * (d - x0)) / (x1 - x0);
  const Y = (v) => 190 - (175 * (v - y0)) / (y1 - y0);
  let html = `<line x1="45" x2="350" y1="${Y(0)}" y2="${Y(0)}" class="axis"/>` +
    `<text x="4" y="${Y(y1) + 4}">${y1.toFixed(0)} %</text><text x="4" y="${Y(y0)}">${y0.toFixed(0)} %</text>` +
    `<text x="150" y="214">days since baseline</text><text x="330" y="214">${x1.toFixed(0)}</text>`;
  for (const [name, series] of [["factual", curve.factual], ["whatif", curve.whatif]]) {
    const valid = series.filter((p) => p.change_pct !== null);
    html += `<polyline class="${name}" points="${valid.map((p) => `${X(p.days)},${Y(p.change_pct)}`).join(" ")}"/>`;
    for (const p of valid) {
      if (p.interval_90) html += `<line class="${name}" x1="${X(p.days)}" x2="${X(p.days)}" y1="${Y(p.interval_90[0])}" y2="${Y(p.interval_90[1])}"/>`;
      html += `<circle class="${name}" cx="${X(p.days)}" cy="${Y(p.change_pct)}" r="3"><title>day ${p.days}: ${signed(p.change_pct)}</title></circle>`;
    }
  }
  html += `<text x="50" y="14" class="factual">— factual</text><text x="130" y="14" class="whatif">— what-if</text>`;
  svg.innerHTML = html;
}

// ---- start -----------------------------------------------------------------------------------------------

async function start() {
  try {
    state.info = await api("/api/info");
  } catch (error) {
    report(error.message);
    return;
  }
  $("source").textContent = `model ${state.info.model} · cohort ${state.info.cohort}`;
  if (state.info.dims === 2) $("view").disabled = true;
  $("view").onchange = applySliceType;
  $("radiological").onchange = applySliceType;
  $("window").onchange = applyWindow;
  $("level").onchange = applyWindow;
  $("slice").oninput = moveSlice;
  for (const id of ["overlay", "left-layer", "right-layer"]) $(id).onchange = () => redraw();
  for (const box of document.querySelectorAll(".contour")) box.onchange = () => redraw();
  $("whatif").onsubmit = askWhatIf;
  const rows = await loadPatients();
  const first = rows.find((r) => r.predicted);
  if (first) await openCase(first.key);
  else document.body.dataset.state = "ready";
}

start();
