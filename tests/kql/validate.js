// Validate KQL with the Kusto language service against declared table schemas.
// stdin: {"tables": {"Name": "(col:type, ...)"}, "queries": [{"name": "...", "text": "..."}]}
// stdout: [{"name": "...", "diagnostics": [{"code", "severity", "message", "start"}], "columns": ["name:type"]}]
require('@kusto/language-service-next/bridge.min.js');
require('@kusto/language-service-next/Kusto.Language.Bridge.min.js');

const K = Kusto.Language;
const S = K.Symbols;
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const tables = Object.entries(input.tables).map(([name, schema]) => new S.TableSymbol.$ctor7(name, schema, null));
const globals = K.GlobalState.Default.WithDatabase(new S.DatabaseSymbol.ctor('db', tables));

const results = input.queries.map(({ name, text }) => {
  const code = K.KustoCode.ParseAndAnalyze(text, globals);
  const found = code.GetDiagnostics();
  const diagnostics = [];
  for (let i = 0; i < found.Count; i++) {
    const d = found.getItem(i);
    diagnostics.push({ code: d.Code, severity: d.Severity, message: d.Message, start: d.Start });
  }
  const columns = [];
  const result = code.ResultType;
  if (result && result.Columns) {
    for (let i = 0; i < result.Columns.Count; i++) {
      const c = result.Columns.getItem(i);
      columns.push(`${c.Name}:${c.Type.Name}`);
    }
  }
  return { name, diagnostics, columns };
});
process.stdout.write(JSON.stringify(results));
