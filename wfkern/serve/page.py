"""The page at ``/``: pick an image, tick classes to forget, see the answers without and with them side by side.

Plain HTML and a little JavaScript calling API v1 (``/v1/classes``, then ``/v1/predict`` twice: with the request's
forget set empty and with the ticked classes); no outside resources.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wfkern serve</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2em; max-width: 60em; }
  fieldset { margin: 1em 0; }
  label.cls { display: inline-block; min-width: 9em; }
  .side { display: flex; gap: 2em; }
  .side section { flex: 1; }
  table { border-collapse: collapse; width: 100%; }
  td, th { border-bottom: 1px solid #ccc; padding: .2em .5em; text-align: left; }
  #status.error { color: #b00; }
  img#preview { max-width: 8em; image-rendering: pixelated; border: 1px solid #ccc; }
</style>
</head>
<body>
<h1>wfkern serve</h1>
<p>Pick a PNG or JPEG image, tick the classes to forget, and compare the model's answer without them and with them
(one forward each; the forgetting model is the same network with those classes' gates applied).</p>
<p><label>Image <input type="file" id="image" accept="image/png,image/jpeg"></label>
   <img id="preview" alt=""></p>
<p><label>API key <input type="password" id="key" size="50" placeholder="Bearer key (not needed with --no-auth)">
   </label></p>
<fieldset><legend>Forget</legend><div id="classes">loading classes ...</div></fieldset>
<p><button id="predict" disabled>Predict</button> <span id="status"></span></p>
<div class="side">
  <section><h2>Original</h2><p id="original-forget"></p><table id="original"></table></section>
  <section><h2>Forgetting the ticked classes</h2><p id="forgetting-forget"></p><table id="forgetting"></table></section>
</div>
<script>
const $ = (id) => document.getElementById(id);
let names = [];

function status(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function loadClasses() {
  const r = await fetch("/v1/classes");
  const body = await r.json();
  names = body.classes.map((c) => c.name);
  $("classes").innerHTML = "";
  for (const c of body.classes) {
    const label = document.createElement("label");
    label.className = "cls";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = c.id;
    box.id = "forget-" + c.id;
    label.append(box, " " + c.name);
    $("classes").append(label);
  }
  $("predict").disabled = false;
}

function readImage() {
  return new Promise((resolve, reject) => {
    const file = $("image").files[0];
    if (!file) { reject(new Error("pick an image first")); return; }
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function predict(data, forget) {
  const headers = {"Content-Type": "application/json"};
  const key = $("key").value.trim();
  if (key) headers["Authorization"] = "Bearer " + key;
  const r = await fetch("/v1/predict", {method: "POST", headers,
    body: JSON.stringify({images: [{data}], forget, top_k: Math.min(5, names.length)})});
  const body = await r.json();
  if (!r.ok) throw new Error(r.status + ": " + body.error.message);
  return body;
}

function show(id, body) {
  const table = $(id);
  table.innerHTML = "<tr><th>class</th><th>probability</th></tr>";
  for (const e of body.predictions[0].top_k) {
    const row = table.insertRow();
    row.className = "pred";
    row.insertCell().textContent = e.name;
    row.insertCell().textContent = e.probability.toFixed(4);
  }
  const applied = body.forget.names;
  $(id + "-forget").textContent = "forget set applied: " + (applied.length ? applied.join(", ") : "none");
}

$("image").addEventListener("change", async () => {
  try { $("preview").src = await readImage(); } catch (e) { status(e.message, true); }
});

$("predict").addEventListener("click", async () => {
  const forget = [...document.querySelectorAll("#classes input:checked")].map((b) => Number(b.value));
  status("predicting ...", false);
  try {
    const data = await readImage();
    const [plain, forgetting] = await Promise.all([predict(data, []), predict(data, forget)]);
    show("original", plain);
    show("forgetting", forgetting);
    status("done", false);
  } catch (e) {
    status(e.message, true);
  }
});

loadClasses().catch((e) => status("cannot load the classes: " + e.message, true));
</script>
</body>
</html>
"""
