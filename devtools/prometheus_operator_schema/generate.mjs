// Builds servicemonitor-v1.schema.json and prometheusrule-v1.schema.json (JSON Schema 2020-12) from the
// pinned @kubernetes-models/prometheus-operator. From 4.4 on the package ships no JSON Schema, only ajv
// "standalone" validators: one function per schema node, and a $ref between types is an import of another
// _schemas/*.js file (also in @kubernetes-models/apimachinery and kubernetes-models). This reads them back
// into schemas. Code it does not recognise stops it, so a package with another code shape fails loudly.
// Run through generate.sh (it installs the pinned packages first).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { formats } from "@kubernetes-models/validate";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MODULES = path.join(HERE, "node_modules");
const PACKAGE = "@kubernetes-models/prometheus-operator";
const VERSION = JSON.parse(fs.readFileSync(path.join(MODULES, PACKAGE, "package.json"), "utf8")).version;
const KINDS = ["ServiceMonitor", "PrometheusRule"];
const kindFile = (kind) =>
  path.join(MODULES, PACKAGE, "_schemas", `ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1${kind}.js`);

const REF = "#/$defs/";
const KEYWORDS = new Set(["type", "required", "enum", "pattern", "format", "minLength", "maxLength",
  "minItems", "maxItems", "minimum", "maximum", "oneOf", "anyOf"]);
// Formats jsonschema does not check: their meaning as plain keywords.
const FORMAT_KEYWORDS = {
  int32: { minimum: -(2 ** 31), maximum: 2 ** 31 - 1 },
  quantity: { pattern: formats.quantity.validate.source },
  // RFC 3339, as ajv-formats reads it (its full mode also refuses impossible dates such as 02-30).
  "date-time": { pattern: "^\\d{4}-[01]\\d-[0-3]\\d[Tt ](?:[0-2]\\d:[0-5]\\d:[0-5]\\d|23:59:60)(?:\\.\\d+)?(?:[Zz]|[+-]\\d\\d(?::?\\d\\d)?)$" },
};

function fail(message) {
  throw new Error(`${message}: the package's validator code is not the shape this generator reads`);
}

function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((key) => [key, canonical(value[key])]));
  }
  return value;
}

const same = (a, b) => JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
const defName = (file) => path.basename(file, ".js");

function resolveImport(from, specifier) {
  const file = specifier.startsWith(".") ? path.resolve(path.dirname(from), specifier) : path.join(MODULES, specifier);
  return file.endsWith(".js") ? file : `${file}.js`;
}

// RE2 reads "^(?i)(a|b)$" with the flag applying to the rest; Python's re (and JSON Schema's ECMAScript
// dialect) need it scoped, "^(?i:(a|b)$)".
function scopeFlags(pattern) {
  const m = /^([^()\\[]*)\(\?([a-z]+)\)(.*)$/s.exec(pattern);
  if (!m) {
    if (/\(\?[a-z]+\)/.test(pattern)) fail(`inline flags inside a group in ${pattern}`);
    return pattern;
  }
  return `${m[1]}(?${m[2]}:${m[3]})`;
}

// One _schemas/*.js file: its functions' bodies, imports, enum and pattern constants.
function parseFile(file) {
  const text = fs.readFileSync(file, "utf8");
  const functions = new Map();
  let rest = text.replace(
    /function (validate\d+)\(data,\{instancePath="",parentData,parentDataProperty,rootData=data\}=\{\}\)\{(.*?)\1\.errors=vErrors,0===errors\}/gs,
    (_, name, body) => (functions.set(name, body), ""),
  );
  const imports = new Map();
  const enums = new Map();
  const statement = (re, keep) => {
    rest = rest.replace(re, (...m) => (keep(...m), ""));
  };
  statement(/import\{validate as (validate\d+)\}from"([^"]+)";?/g, (_, name, spec) => {
    imports.set(name, resolveImport(file, spec));
  });
  statement(/let (schema\d+_enum)=(\[[^\]]*\]);?/g, (_, name, values) => enums.set(name, JSON.parse(values)));
  statement(/import\{formats\}from"@kubernetes-models\/validate";?/g, () => {});
  statement(/import func\d+ from"@kubernetes-models\/validate\/runtime\/(ucs2length|re2)";?/g, () => {});
  statement(/let formats\d+=formats(\.[\w-]+|\["[\w-]+"\]);?/g, () => {});
  statement(/let pattern\d+=(RegExp|new func\d+)\("(?:[^"\\]|\\.)*","u"\);?/g, () => {});
  const exported = /export const validate=(validate\d+);?/.exec(rest);
  if (!exported) fail(`${file}: no exported validate`);
  rest = rest.replace(exported[0], "");
  if (rest.trim()) fail(`${file}: unrecognised top-level code ${JSON.stringify(rest.trim().slice(0, 200))}`);
  return { file, functions, imports, enums, root: exported[1] };
}

// The schema one validator function checks.
function decompile(parsed, name, refs, stack = []) {
  const body = parsed.functions.get(name);
  if (body === undefined) fail(`${parsed.file}: ${name} is not defined`);
  if (stack.includes(name)) fail(`${parsed.file}: ${name} is recursive`);
  const schema = {};
  const types = [];
  let combinator = null;
  for (const [, keyword, params] of body.matchAll(/keyword:"(\w+)",params:\{((?:[^{}"]|"(?:[^"\\]|\\.)*")*)\}\}/g)) {
    if (!KEYWORDS.has(keyword)) fail(`${parsed.file}: ${name} uses ${keyword}`);
    const param = (key) => {
      const m = new RegExp(`(?:^|,)${key}:("(?:[^"\\\\]|\\\\.)*"|[^,]+)`).exec(params);
      if (!m) fail(`${parsed.file}: ${name}: ${keyword} without ${key}`);
      return m[1];
    };
    if (keyword === "type") types.push(...JSON.parse(param("type")).split(","));
    else if (keyword === "required") (schema.required ??= []).push(JSON.parse(param("missingProperty")));
    else if (keyword === "enum") schema.enum = parsed.enums.get(param("allowedValues")) ?? fail(`${name}: enum`);
    else if (keyword === "oneOf" || keyword === "anyOf") combinator = keyword;
    else if (keyword === "pattern" || keyword === "format") schema[keyword] = JSON.parse(param(keyword));
    else schema[keyword] = Number(param("limit"));
  }
  if (/patternProperties|propertyNames|unevaluated|useDefaults|\.default/.test(body)) fail(`${name}: unsupported code`);
  if (schema.pattern) schema.pattern = scopeFlags(schema.pattern);
  if (schema.format) Object.assign(schema, FORMAT_KEYWORDS[schema.format]);
  const nullable = /null!==data(?![\w$.[])/.test(body);
  if (types.length) schema.type = nullable ? [...types, "null"] : types.length === 1 ? types[0] : types;

  const parts = [];
  const calls = /\b(validate\d+)\(data(?:\.([A-Za-z_$][\w$]*)|\["((?:[^"\\]|\\.)*)"\]|\[(i|key)\d+\])?,\{/g;
  for (const [, callee, prop, quoted, loop] of body.matchAll(calls)) {
    let sub;
    if (parsed.imports.has(callee)) {
      const target = parsed.imports.get(callee);
      refs.add(target);
      sub = { $ref: REF + defName(target) };
    } else {
      sub = decompile(parsed, callee, refs, [...stack, name]);
    }
    if (prop !== undefined || quoted !== undefined) (schema.properties ??= {})[prop ?? JSON.parse(`"${quoted}"`)] = sub;
    else if (loop === "i") schema.items = sub;
    else if (loop === "key") schema.additionalProperties = sub;
    else parts.push(sub);
  }
  if (combinator) {
    if (!parts.length) fail(`${name}: ${combinator} without branches`);
    schema[combinator] = parts;
  } else if (parts.length) {
    if (!Object.keys(schema).length && parts.length === 1) return nullable ? { anyOf: [{ type: "null" }, parts[0]] } : parts[0];
    schema.allOf = parts;
  }
  return schema;
}

// Every type reachable from the kinds, by definition name.
function collect() {
  const defs = {};
  const todo = KINDS.map(kindFile);
  const done = new Set();
  while (todo.length) {
    const file = todo.pop();
    if (done.has(file)) continue;
    done.add(file);
    const parsed = parseFile(file);
    const refs = new Set();
    defs[defName(file)] = decompile(parsed, parsed.root, refs);
    todo.push(...refs);
  }
  return defs;
}

// Embedded Go structs arrive as allOf of object types; the CRD inlines their fields, and so does this, so that
// closing objects to unknown fields later needs no unevaluatedProperties.
function inlineEmbedded(defs) {
  const resolve = (node) => (node.$ref ? defs[node.$ref.slice(REF.length)] : node);
  const visit = (node) => {
    if (Array.isArray(node)) return node.forEach(visit);
    if (!node || typeof node !== "object") return;
    Object.values(node).forEach(visit);
    if (!node.allOf) return;
    const members = node.allOf.map(resolve);
    members.forEach(visit);
    if (members.every((m) => m.properties)) {
      delete node.allOf;
      for (const member of members) {
        for (const [key, value] of Object.entries(member)) {
          if (key === "properties") {
            for (const [prop, sub] of Object.entries(value)) {
              if (node.properties?.[prop] && !same(node.properties[prop], sub)) fail(`two schemas for ${prop}`);
              (node.properties ??= {})[prop] = sub;
            }
          } else if (key === "required") node.required = [...new Set([...(node.required ?? []), ...value])];
          else if (key === "type" && (node.type === undefined || same(node.type, value))) node.type = value;
          else fail(`embedding a schema with ${key}`);
        }
      }
    } else if (node.allOf.length === 1 && node.allOf[0].$ref && !node.$ref) {
      node.$ref = node.allOf[0].$ref;
      delete node.allOf;
    }
  };
  visit(defs);
}

function reachable(defs, root) {
  const out = {};
  const todo = [root];
  while (todo.length) {
    const name = todo.pop();
    if (out[name]) continue;
    out[name] = defs[name] ?? fail(`no definition ${name}`);
    JSON.stringify(out[name], (key, value) => {
      if (key === "$ref") todo.push(value.slice(REF.length));
      return value;
    });
  }
  return out;
}

const defs = collect();
inlineEmbedded(defs);
for (const kind of KINDS) {
  const root = defName(kindFile(kind));
  const out = path.join(HERE, `${kind.toLowerCase()}-v1.schema.json`);
  const schema = canonical({
    $comment: `Generated from ${PACKAGE} ${VERSION} (MIT) by generate.mjs; do not edit, run devtools/prometheus_operator_schema/generate.sh`,
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: `${kind} (monitoring.coreos.com/v1)`,
    "x-generated-from": { package: PACKAGE, version: VERSION },
    $ref: REF + root,
    $defs: reachable(defs, root),
  });
  fs.writeFileSync(`${out}.tmp`, JSON.stringify(schema, null, 2) + "\n");
  fs.renameSync(`${out}.tmp`, out);
  console.log(`wrote ${path.relative(process.cwd(), out)} (${Object.keys(schema.$defs).length} definitions)`);
}
